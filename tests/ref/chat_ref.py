#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""@brief Reference chat prompt: a chat_template rendered with jinja2 as transformers'
apply_chat_template(add_generation_prompt=True) renders it, and its token ids with `tokenizers`.

  chat_ref.py --config tokenizer_config.json [--tokenizer tokenizer.json] --user TEXT [--system TEXT]

prints the rendered prompt as a JSON string on the first line and, with --tokenizer, the ids of
Tokenizer.encode(prompt, add_special_tokens=False) (apply_chat_template(tokenize=True) adds no
special tokens: the template carries them) on the second. The environment is transformers' (a
sandboxed jinja2 environment with trim_blocks and lstrip_blocks, the loopcontrols extension,
raise_exception, strftime_now, tojson); messages are [system (when given), user].
"""
import argparse
import json
from datetime import datetime

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment


def render(template, bos, eos, messages):
    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False, indent=indent)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template).render(messages=messages, add_generation_prompt=True,
                                            bos_token=bos, eos_token=eos)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--tokenizer")
    ap.add_argument("--user", required=True)
    ap.add_argument("--system")
    a = ap.parse_args()
    cfg = json.load(open(a.config, encoding="utf-8"))
    tmpl = cfg["chat_template"]
    if isinstance(tmpl, list):
        tmpl = next(t["template"] for t in tmpl if t.get("name") == "default")
    tok_str = lambda t: t["content"] if isinstance(t, dict) else t  # noqa: E731
    messages = ([{"role": "system", "content": a.system}] if a.system is not None else []) + \
        [{"role": "user", "content": a.user}]
    text = render(tmpl, tok_str(cfg.get("bos_token") or ""), tok_str(cfg.get("eos_token") or ""), messages)
    print(json.dumps(text))
    if a.tokenizer:
        from tokenizers import Tokenizer
        ids = Tokenizer.from_file(a.tokenizer).encode(text, add_special_tokens=False).ids
        print(" ".join(map(str, ids)))


if __name__ == "__main__":
    main()
