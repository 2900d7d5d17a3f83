"""Generate config/README.md from the JSON Schema (the one definition of every key).

    python -m tfconv.config.docs > config/README.md     (a test checks the file is up to date)
"""
from __future__ import annotations

import json
import sys

from .schema import load_schema


def _type(s: dict) -> str:
    if "enum" in s:
        return "one of " + ", ".join(f"`{v}`" for v in s["enum"])
    if "const" in s:
        return f"`{s['const']}`"
    t = s.get("type", "")
    if isinstance(t, list):
        t = " or ".join(t)
    if t == "array" and "items" in s:
        it = s["items"]
        if "anyOf" in it:
            inner = " / ".join(_type(x) for x in it["anyOf"])
        else:
            inner = _type(it)
        return f"list of ({inner})"
    bounds = []
    for k, sym in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")):
        if k in s:
            bounds.append(f"{sym} {s[k]}")
    return t + (f" ({', '.join(bounds)})" if bounds else "")


def _rows(props: dict, prefix: str, required=(), defs=None, builtin=None):
    refs = [k for k, s in props.items() if "$ref" in s]
    if refs and defs is not None:  # keys sharing one definition (resources.<rule>): one row, keys once
        target = defs[props[refs[0]]["$ref"].rsplit("/", 1)[-1]]
        name = f"{prefix}<rule>"
        also = ("; a key that neither it nor `default` gives takes the value in the default column"
                if "default" in target else "")
        yield f"| `{name}` | object |  | One of: {', '.join(f'`{k}`' for k in refs)}{also}. |"
        yield from _rows(target["properties"], name + ".", target.get("required", ()), defs, target.get("default"))
        props = {k: v for k, v in props.items() if k not in refs}
    for key, s in props.items():
        name = f"{prefix}{key}"
        if "default" not in s and builtin and key in builtin:
            s = dict(s, default=builtin[key])
        default = json.dumps(s["default"]) if "default" in s else ("required" if key in required else "")
        yield f"| `{name}` | {_type(s)} | {default} | {s.get('description', '').strip()} |"
        if s.get("type") == "object" and "properties" in s:
            yield from _rows(s["properties"], name + ".", s.get("required", ()), defs)


def render() -> str:
    schema = load_schema()
    out = ["# Configuration keys", "",
           "Generated from `tfconv/config/schema.yaml` by `python -m tfconv.config.docs`; do not edit by hand.",
           "The config is validated when the Snakefile is parsed and by every task, before any work starts;",
           "`tfconv validate FILE` prints a config with every default filled in.", "",
           "Files: `config.yaml` (the embedded default, 2 cores), `paper.yaml` (paper scale, for clusters),",
           "`../tests/configs/config_small.yaml` (the tests' tiny grid).", "",
           "## Top level", "", "| key | type | default | description |", "|---|---|---|---|"]
    top = {k: v for k, v in schema["properties"].items() if k not in ("datasets", "experiments")}
    out += list(_rows(top, "", defs=schema["$defs"]))
    out += ["", "## `datasets.<name>`", "", "Each dataset has a `kind`; the keys allowed depend on it.", ""]
    for branch in schema["$defs"]["dataset"]["allOf"]:
        props = branch["then"]["properties"]
        out += [f"### kind `{props['kind']['const']}`", "", "| key | type | default | description |", "|---|---|---|---|"]
        out += list(_rows({k: v for k, v in props.items() if k != "kind"}, ""))
        out.append("")
    exp = schema["$defs"]["experiment"]
    out += ["## `experiments.<name>`", "", "| key | type | default | description |", "|---|---|---|---|"]
    out += list(_rows(exp["properties"], "", exp.get("required", ())))
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
