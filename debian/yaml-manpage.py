#!/usr/bin/env python3
"""Writes mailswitch.yaml(5) from config/mailswitch.example.yaml, the file that documents every
key in its comments: the page is those comments, key by key, and the example itself, so the two
cannot say different things.

  yaml-manpage.py EXAMPLE VERSION DATE OUTPUT      (DATE as YYYY-MM-DD)

The example's layout is what this reads: a comment block above a key describes it, a comment
after a value on the key's line adds to it, a comment block above a top-level key introduces its
section, and a commented-out key ("# max_sessions: 5000") is an optional key shown disabled.
"""
import re
import sys

KEY = re.compile(r"^(?P<indent> *)(?P<dash>- )?(?P<key>[a-z_0-9]+):(?P<rest>.*)$")
COMMENTED_KEY = re.compile(r"^(?P<indent> *)# (?P<key>[a-z_0-9]+): (?P<value>\S.*)$")
# Children of these keys are names the operator chooses (a backend's name), not keys.
NAMED_CHILDREN = {"backends": "NAME"}


def roff(text):
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text[:1] in (".", "'") else text


def split_comment(rest):
    """Splits a value from its trailing comment, minding quotes."""
    quote = None
    for i, c in enumerate(rest):
        if quote:
            if c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c == "#" and (i == 0 or rest[i - 1] in " \t"):
            return rest[:i].strip(), rest[i + 1:].strip()
    return rest.strip(), ""


def parse(lines):
    """Yields ("intro", paragraphs), then ("section", key, paragraphs) and
    ("key", path, value, paragraphs, disabled) in file order."""
    pending = []          # comment lines above the next key
    stack = []            # (indent, path component)
    intro_done = False
    for line in lines:
        stripped = line.strip()
        commented = COMMENTED_KEY.match(line)
        if not stripped:
            if not intro_done and pending:
                yield ("intro", pending)
                pending, intro_done = [], True
            elif pending:
                pending.append("")
            continue
        if commented and stack and len(commented.group("indent")) > stack[0][0] \
                and " " not in split_comment(commented.group("value"))[0].strip('"'):
            indent = len(commented.group("indent"))
            parents = [name for level, name in stack if level < indent]
            value, note = split_comment(commented.group("value"))
            yield ("key", ".".join(parents + [commented.group("key")]), value,
                   pending + ([note] if note else []), True)
            pending = []
            continue
        if stripped.startswith("#"):
            pending.append(stripped[2:] if stripped.startswith("# ") else stripped[1:])
            continue
        intro_done = True
        match = KEY.match(line)
        if not match:
            pending = []      # a list item's value ("- { cert: … }"): shown in EXAMPLE
            continue
        indent = len(match.group("indent")) + (2 if match.group("dash") else 0)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1] if stack else None
        key = match.group("key")
        name = NAMED_CHILDREN.get(parent, key) if parent in NAMED_CHILDREN and stack[-1][0] < indent else key
        if match.group("dash") and stack:
            stack[-1] = (stack[-1][0], stack[-1][1].rstrip("[]") + "[]")
        path = ".".join([n for _, n in stack] + [name])
        value, note = split_comment(match.group("rest"))
        stack.append((indent, name))
        if indent == 0:
            yield ("section", key, [p for p in pending])
            pending = []
            if value:
                yield ("key", key, value, [note] if note else [], False)
        else:
            yield ("key", path, value, pending + ([note] if note else []), False)
        pending = []


def paragraphs(lines):
    """Comment lines into roff: a blank line parts paragraphs, and an item of a list
    ("  sync: …", "  - …") starts a line of its own; its indented continuation joins it."""
    out = []
    for line in lines:
        if not line:
            out.append(".sp")
        elif re.match(r"^\s*([a-z_0-9]+:\s|-\s)", line):
            out.append(".br")
            out.append(roff(line.strip()))
        else:
            out.append(roff(line.strip()))
    while out and out[-1] in (".sp", ".br"):
        out.pop()
    return out


def main():
    example, version, date, output = sys.argv[1:5]
    text = open(example, encoding="utf-8").read()
    page = [
        '.TH MAILSWITCH.YAML 5 "%s" "mailswitch %s" "File Formats"' % (date, version),
        ".SH NAME",
        "mailswitch.yaml \\- configuration of the mailswitch IMAP/POP3 routing proxy",
        ".SH SYNOPSIS",
        ".I /etc/mailswitch/mailswitch.yaml",
        ".SH DESCRIPTION",
    ]
    seen = set()
    for item in parse(text.splitlines()):
        if item[0] == "intro":
            page += paragraphs(item[1])
            page.append(".PP")
            page.append("This page is generated from the documented example configuration; "
                        "the package installs it, with the parts that need files of your own "
                        "commented out, as")
            page.append(".IR /etc/mailswitch/mailswitch.yaml .")
        elif item[0] == "section":
            page.append(".SH %s" % roff(item[1]).upper())
            if item[2]:
                page += paragraphs(item[2])
        else:
            _, path, value, notes, disabled = item
            if path in seen:
                continue
            seen.add(path)
            page.append(".TP")
            heading = "\\fB%s\\fR" % roff(path)
            if value:
                heading += " (example: \\fI%s\\fR%s)" % (roff(value), ", commented out" if disabled else "")
            page.append(heading)
            page += paragraphs([n for n in notes]) or ["(see the example)"]
    page += [".SH EXAMPLE", "The documented example, as shipped in",
             ".IR /usr/share/doc/mailswitch/mailswitch.example.yaml :", ".PP", ".nf", ".RS 2"]
    page += [roff(line) if line else "" for line in text.splitlines()]
    page += [".RE", ".fi",
             ".SH FILES",
             ".TP", ".I /etc/mailswitch/mailswitch.yaml", "The configuration read by the service and by the CLI.",
             ".SH SEE ALSO", ".BR mailswitch (8)"]
    with open(output, "w", encoding="utf-8") as out:
        out.write("\n".join(line if line != "" else ".sp" for line in page) + "\n")


if __name__ == "__main__":
    main()
