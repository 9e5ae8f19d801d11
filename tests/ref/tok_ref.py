#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""@brief Reference tokenization of a corpus with the Hugging Face `tokenizers` library.

Usage: tok_ref.py TOKENIZER_JSON CORPUS_FILE OUT

CORPUS_FILE (UTF-8) holds documents separated by separator lines:
  * the file is split into lines at "\\n" only ("\\r" stays part of its line); a final "\\n"
    at the end of the file terminates the last line and does not start a new one;
  * a line consisting of exactly U+001E (ASCII RS) is a separator;
  * a document is the lines between two separators (or the file start / end) joined by
    "\\n", so a document never ends with the newline before its separator; a document
    that should end in "\\n" has an empty line before the separator;
  * nothing follows the last separator when the file ends with one.

OUT gets one line per document: the ids of
Tokenizer.encode(doc, add_special_tokens=False), separated by single spaces
(an empty line for an empty document). Special tokens written in the text
(e.g. <|im_start|>) are matched as special tokens, as the tokenizer does by default.
"""
import sys

from tokenizers import Tokenizer

SEPARATOR = "\x1e"


def read_documents(path):
    """Split CORPUS_FILE into documents following the rules in the module docstring."""
    with open(path, "rb") as f:
        text = f.read().decode("utf-8")  # strict: a corpus that is not UTF-8 is an error
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()  # the final newline terminates the last line
    docs, cur = [], []
    for line in lines:
        if line == SEPARATOR:
            docs.append("\n".join(cur))
            cur = []
        else:
            cur.append(line)
    if cur:
        docs.append("\n".join(cur))
    return docs


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: tok_ref.py TOKENIZER_JSON CORPUS_FILE OUT")
    tok = Tokenizer.from_file(sys.argv[1])
    docs = read_documents(sys.argv[2])
    n_ids = 0
    with open(sys.argv[3], "w", encoding="ascii") as out:
        for doc in docs:
            ids = tok.encode(doc, add_special_tokens=False).ids
            n_ids += len(ids)
            out.write(" ".join(map(str, ids)) + "\n")
    print(f"tok_ref: {len(docs)} documents, {n_ids} tokens -> {sys.argv[3]}", file=sys.stderr)


if __name__ == "__main__":
    main()
