#!/usr/bin/env python3
"""List the functions in src/ longer than a limit, longest first.

A function is measured from its `fn` line to its closing brace, with comments, strings and
character literals blanked out first so that their braces do not count. The int8 kernels
(src/model/int8/), whose length follows the hardware's registers, and files marked as
generated are left out.

    python3 tools/long_functions.py            # over 100 lines
    python3 tools/long_functions.py --over 120
"""

import argparse
import os
import re
import sys

SKIPPED_DIRS = ("model/int8/",)  # relative to --src
GENERATED = re.compile(r"@generated|automatically generated|do not edit", re.IGNORECASE)
FN = re.compile(r"\bfn\s+([A-Za-z_][A-Za-z0-9_]*)")
RAW_STRING = re.compile(r'r(#*)"')
CHAR = re.compile(r"'(\\.[^']*|[^\\'])'")


def blank(text):
    """The text with comments, strings and character literals replaced by spaces (newlines kept)."""
    out, i, n = [], 0, len(text)
    spaces = lambda s: re.sub(r"[^\n]", " ", s)
    while i < n:
        c = text[i]
        word_before = i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i)
            j = n if j < 0 else j + 2
        elif c == "r" and not word_before and RAW_STRING.match(text, i):
            m = RAW_STRING.match(text, i)
            j = text.find('"' + m.group(1), m.end())
            j = n if j < 0 else j + 1 + len(m.group(1))
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
        elif c == "'" and CHAR.match(text, i):
            j = CHAR.match(text, i).end()
        else:
            out.append(c)
            i += 1
            continue
        out.append(spaces(text[i:j]))
        i = j
    return "".join(out)


def functions(path):
    """(lines, first line, name) of every function with a body in the file."""
    text = blank(open(path, encoding="utf-8").read())
    for m in FN.finditer(text):
        j = m.end()
        while j < len(text) and text[j] not in "{;":
            j += 1
        if j >= len(text) or text[j] == ";":
            continue  # a declaration without a body (trait method, extern fn)
        depth, k = 0, j
        while k < len(text):
            if text[k] == "{":
                depth += 1
            elif text[k] == "}":
                depth -= 1
                if depth == 0:
                    break
            k += 1
        start = text.count("\n", 0, m.start()) + 1
        end = text.count("\n", 0, k) + 1
        yield end - start + 1, start, m.group(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--over", type=int, default=100, help="list functions longer than this many lines (100)")
    parser.add_argument("--src", default="src", help="the folder to search (src)")
    args = parser.parse_args()
    rows = []
    for folder, _, names in os.walk(args.src):
        for name in names:
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, args.src).replace(os.sep, "/")
            if not name.endswith(".rs") or relative.startswith(SKIPPED_DIRS):
                continue
            with open(path, encoding="utf-8") as f:
                if GENERATED.search(f.read(2000)):
                    continue
            rows += [(lines, path, start, fn) for lines, start, fn in functions(path) if lines > args.over]
    for lines, path, start, fn in sorted(rows, key=lambda r: (-r[0], r[1], r[2])):
        print(f"{lines:5d}  {path}:{start}  {fn}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
