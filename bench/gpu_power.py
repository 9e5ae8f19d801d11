# SPDX-License-Identifier: MIT
"""NVML power and SM clock over a window, for the PyTorch baselines: the same figures that
bench/prefill prints for apb (runtime/telemetry.c), read through ctypes from the driver's
libnvidia-ml.so.1 (no Python package needed). Without a driver, Sampler.summary() is None."""
import ctypes
import threading
import time

_POWER_CAP, _THERMAL, _IDLE = 0x4, 0x20 | 0x40, 0x1


class Sampler:
    """with Sampler() as s: ...   then s.summary(): dict or None (no NVML)."""

    def __init__(self, index=0, period_s=0.02):
        self.period, self.samples, self.e0, self.e1 = period_s, [], None, None
        try:
            self.nv = ctypes.CDLL("libnvidia-ml.so.1")
            self.dev = ctypes.c_void_p()
            if self.nv.nvmlInit_v2() or self.nv.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(self.dev)):
                self.nv = None
        except OSError:
            self.nv = None

    def _read(self):
        u, r, e = ctypes.c_uint(), ctypes.c_ulonglong(), ctypes.c_ulonglong()
        p = self.nv.nvmlDeviceGetPowerUsage(self.dev, ctypes.byref(u)) == 0 and u.value * 1e-3
        c = self.nv.nvmlDeviceGetClockInfo(self.dev, 1, ctypes.byref(u)) == 0 and u.value
        why = self.nv.nvmlDeviceGetCurrentClocksEventReasons(self.dev, ctypes.byref(r)) == 0 and r.value
        en = self.nv.nvmlDeviceGetTotalEnergyConsumption(self.dev, ctypes.byref(e)) == 0 and e.value
        return time.perf_counter(), p or 0.0, c or 0, why or 0, en or 0

    def _loop(self):
        while not self.stop.is_set():
            self.samples.append(self._read())
            time.sleep(self.period)

    def __enter__(self):
        if self.nv:
            self.samples, self.first = [], self._read()
            self.stop = threading.Event()
            self.th = threading.Thread(target=self._loop, daemon=True)
            self.th.start()
        return self

    def __exit__(self, *exc):
        if self.nv:
            self.stop.set()
            self.th.join()
            self.last = self._read()
        return False

    def summary(self):
        if not self.nv or not self.samples:
            return None
        s, (t0, *_, e0), (t1, *_, e1) = self.samples, self.first, self.last
        n = len(s)
        w = (e1 - e0) * 1e-3 / (t1 - t0) if e1 > e0 and t1 > t0 else sum(x[1] for x in s) / n
        return {"window_s": t1 - t0, "power_w_mean": w, "power_w_max": max(x[1] for x in s),
                "sm_mhz_mean": sum(x[2] for x in s) / n, "sm_mhz_min": min(x[2] for x in s),
                "frac_power_cap": sum(1 for x in s if x[3] & _POWER_CAP) / n,
                "frac_thermal": sum(1 for x in s if x[3] & _THERMAL) / n}


def line(s):
    """one short line of a summary (or '' without NVML)"""
    if not s:
        return ""
    return (f"{s['power_w_mean']:.0f} W mean ({s['power_w_max']:.0f} max), SM {s['sm_mhz_mean']:.0f} MHz mean "
            f"({s['sm_mhz_min']:.0f} min), power-capped {100 * s['frac_power_cap']:.0f} % of samples")
