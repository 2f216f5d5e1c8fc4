"""Writes one benchmark's section of docs/benchmarks.md, between its own
begin and end markers, leaving the rest of the file as it is (appended at
the end the first time). bench/seccomp.py and bench/warm.py use it;
bench/bench.py keeps their sections when it rewrites the file."""


def replace_section(path, begin, end, md):
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    section = f"{begin}\n{md}\n{end}"
    if begin in text and end in text:
        text = text[:text.index(begin)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    with open(path, "w") as f:
        f.write(text)
