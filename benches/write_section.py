"""Replaces one script's section of benches/RESULTS.md (between `<!-- NAME:begin -->` and
`<!-- NAME:end -->`), or appends it; the other sections are left as they are.

usage: python3 benches/write_section.py NAME RESULTS.md SECTION-TEXT
"""
import re
import sys


def write_section(name, path, section):
    try:
        text = open(path).read()
    except FileNotFoundError:
        text = ""
    if not text.strip():
        text = "# Benchmarks\n\nEach section is written by the script it names; rerun the script to refresh it.\n"
    pattern = re.compile(rf"<!-- {re.escape(name)}:begin -->.*?<!-- {re.escape(name)}:end -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    open(path, "w").write(text)


if __name__ == "__main__":
    write_section(sys.argv[1], sys.argv[2], sys.argv[3])
