#!/usr/bin/env python3
"""Reads the final stage of a Dockerfile and prints what scripts/build-image.sh must reproduce.

    scripts/dockerfile-final-stage.py Dockerfile [NAME=VALUE ...]

NAME=VALUE are build args (like `docker build --build-arg`); the stage's ARG defaults apply
otherwise. One instruction per line on stdout, fields separated by a tab:

    from    IMAGE
    copy    SOURCE  DEST      (SOURCE is the build stage's path; --from=... is required)
    user    USER
    entrypoint  JSON-ARRAY
    label   KEY  VALUE        (one line per label, ${ARG} substituted)

Any other instruction in the final stage (RUN, ENV, WORKDIR, ...) is an error: build-image.sh
would not reproduce it, so the daemonless image and the Dockerfile's would silently differ.
"""
import json
import re
import shlex
import sys


def logical_lines(text):
    """Dockerfile lines with comments dropped and backslash continuations joined."""
    out, cur = [], ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if cur and line.lstrip().startswith("#"):
            continue  # comment inside a continued instruction
        if line.endswith("\\"):
            cur += line[:-1] + " "
            continue
        cur += line
        out.append(cur.strip())
        cur = ""
    if cur.strip():
        out.append(cur.strip())
    return out


def substitute(value, args):
    def repl(m):
        name = m.group(1) or m.group(2)
        if name not in args:
            sys.exit(f"dockerfile-final-stage: ${{{name}}} is not an ARG of the final stage")
        return args[name]

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", repl, value)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    given = {}
    for kv in sys.argv[2:]:
        k, _, v = kv.partition("=")
        given[k] = v
    lines = logical_lines(open(sys.argv[1], encoding="utf-8").read())
    starts = [i for i, l in enumerate(lines) if l.split(None, 1)[0].upper() == "FROM"]
    if not starts:
        sys.exit("dockerfile-final-stage: no FROM")
    stage = lines[starts[-1]:]
    args, out = {}, []
    for line in stage:
        instr, _, rest = line.partition(" ")
        instr, rest = instr.upper(), rest.strip()
        if instr == "FROM":
            words = rest.split()
            if any(w.startswith("--") for w in words) or len(words) not in (1, 3):
                sys.exit(f"dockerfile-final-stage: unsupported final FROM: {rest}")
            out.append(("from", words[0]))
        elif instr == "ARG":
            name, eq, default = rest.partition("=")
            default = shlex.split(default)[0] if eq and shlex.split(default) else ""
            args[name] = given.get(name, default)
        elif instr == "LABEL":
            for word in shlex.split(rest):
                k, eq, v = word.partition("=")
                if not eq:
                    sys.exit(f"dockerfile-final-stage: LABEL without '=': {word}")
                out.append(("label", k, substitute(v, args)))
        elif instr == "USER":
            out.append(("user", substitute(rest, args)))
        elif instr == "ENTRYPOINT":
            try:
                ep = json.loads(rest)
            except ValueError:
                sys.exit("dockerfile-final-stage: ENTRYPOINT must be the exec (JSON) form")
            out.append(("entrypoint", json.dumps(ep)))
        elif instr == "COPY":
            words = rest.split()
            flags = [w for w in words if w.startswith("--")]
            paths = [w for w in words if not w.startswith("--")]
            if not any(f.startswith("--from=") for f in flags) or len(paths) != 2:
                sys.exit(f"dockerfile-final-stage: only `COPY --from=STAGE SRC DEST` is supported: {rest}")
            if [f for f in flags if not f.startswith("--from=")]:
                sys.exit(f"dockerfile-final-stage: COPY flags other than --from are not reproduced: {rest}")
            out.append(("copy", paths[0], paths[1]))
        else:
            sys.exit(f"dockerfile-final-stage: {instr} in the final stage is not reproduced by "
                     "scripts/build-image.sh; teach it there first")
    for fields in out:
        if any("\t" in f or "\n" in f for f in fields):
            sys.exit(f"dockerfile-final-stage: tab or newline in {fields}")
        print("\t".join(fields))


if __name__ == "__main__":
    main()
