#!/usr/bin/env python3
"""Compare, for every method a running keel-tgt registers, the parameter names Keel accepts with
the ones SPDK knows: those SPDK's rpc.py (the `spdk` package, run this with its venv's python)
can send when every option is given, and, with --schema, those SPDK's schema/schema.yaml lists.

Keel decodes params with serde's deny_unknown_fields, whose error for an unknown field lists the
fields the method accepts ("unknown field `zzzz_keel_probe`, expected one of `a`, `b`"): one call
per method with only that probe field reads them, without running the method. A method that
answers anything else ignores unknown parameters, which is reported too.

Only the methods callable in the target's current state are probed: run it once on a running
target and once on a --wait-for-rpc target before framework_start_init (the startup methods).

Usage: target/venv-spdk/bin/python3 scripts/spdk-params-probe.py -s SOCK [--schema schema.yaml]
       [--allow FILE]
Prints one line per gap; exits 1 when a name SPDK sends is refused as unknown (unless the method
is named in --allow with that parameter, "method param" per line) or a method ignores unknown
parameters.
"""
import argparse
import ast
import contextlib
import io
import inspect
import json
import os
import re
import socket
import sys
import tempfile
import textwrap

PROBE = "zzzz_keel_probe"  # sorts after every real name, so a real unknown name is reported first


def call(sock_path, method, params, _id=[0]):
    """One JSON-RPC call over the UNIX socket: (result, error)."""
    _id[0] += 1
    req = {"jsonrpc": "2.0", "method": method, "id": _id[0]}
    if params is not None:
        req["params"] = params
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(sock_path)
    s.sendall(json.dumps(req).encode())
    buf = b""
    dec = json.JSONDecoder()
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
        try:
            resp, _ = dec.raw_decode(buf.decode())
            break
        except ValueError:
            continue
    s.close()
    return resp.get("result"), resp.get("error")


# Methods whose parameters cannot be probed this way, and why.
SKIP = {
    "load_config": "its params are a whole saved config (rpc.py sends the file)",
    "framework_start_init": "answers only before initialisation (its own check: no parameters)",
}

# Values for required parameters while probing (the handler refuses the probe field before it
# acts on them).
PLACEHOLDERS = {
    "nqn": "nqn.2016-06.io.spdk:keel-probe",
    "host": "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000000",
    "trtype": "TCP",
    "traddr": "127.0.0.1",
    "trsvcid": "1",
    "listen_address": {"trtype": "TCP", "traddr": "127.0.0.1", "trsvcid": "1"},
    "bdev_name": "keel-probe",
}


def keel_accepted(sock_path, method, nested=None, nested_fields=()):
    """The parameter names `method` accepts (of its object parameter `nested`, when given), or
    None when it does not refuse unknown ones. Required parameters the answer asks for
    ("missing field `x`") are filled in and the call repeated."""
    top, inner = {}, {PROBE: 0}
    msg = ""
    for _ in range(8):
        params = dict(top)
        if nested:
            params[nested] = dict(inner)
        else:
            params.update(inner)
        _, err = call(sock_path, method, params)
        msg = (err or {}).get("message", "")
        m = re.search(r"missing field `([^`]+)`", msg)
        if not m:
            break
        name = m.group(1)
        target = inner if nested and name in nested_fields else top
        if name in target:
            break
        target[name] = PLACEHOLDERS.get(name, "x")
    if "no parameters" in msg and not nested:
        return set(), msg
    if f"unknown field `{PROBE}`" not in msg:
        return None, msg or "(succeeded)"
    if "there are no fields" in msg:
        return set(), msg
    return set(re.findall(r"`([^`]+)`", msg.split("expected", 1)[1])), msg


def schema_params(path):
    """({method: {param: class of an object param or None}}, {object class: {field names}}) from
    SPDK's schema.yaml (its `methods:` and `objects:` lists, read line by line so that no YAML
    library is needed: `  - name: M` starts an entry, `      - name: P` under its
    `    params:`/`    fields:` is a parameter, `        class: C` gives its class)."""
    methods, objects = {}, {}
    section, cur, entry, param = None, None, False, None
    with open(path) as f:
        for line in f:
            if re.match(r"^\S", line):
                section = line.split(":", 1)[0]
                continue
            if section not in ("methods", "objects"):
                continue
            m = re.match(r"^  - name: (\S+)", line)
            if m:
                cur = {}
                (methods if section == "methods" else objects)[m.group(1)] = cur
                entry, param = False, None
                continue
            if re.match(r"^    (params|fields):", line):
                entry = True
                continue
            if re.match(r"^    \S", line):
                entry = False
                continue
            m = re.match(r"^      - name: (\S+)", line)
            if m and entry and cur is not None:
                param = m.group(1)
                cur[param] = None
                continue
            m = re.match(r"^        class: (\S+)", line)
            if m and entry and param:
                cur[param] = m.group(1)
    return methods, {k: set(v) for k, v in objects.items()}


class Recorder:
    """Stands in for rpc.py's client: records each call's method and keyword names."""

    def __init__(self):
        self.calls = {}
        self.timeout = 60.0

    def __getattr__(self, name):
        def record(**kwargs):
            self.calls.setdefault(name, set()).update(k for k, v in kwargs.items() if v is not None)
            return {} if not name.endswith("s") else []
        return record

    def call(self, method, params=None):
        self.calls.setdefault(method, set()).update((params or {}).keys())
        return {}


def dummy(action):
    """A value for an argparse action that its type accepts."""
    if action.choices:
        return list(action.choices)[0]
    if action.nargs == 0:
        return action.const if action.const is not None else True
    t = action.type
    if t is int:
        return 1
    if t is float:
        return 1.0
    if t is None or t is str:
        return "1" if action.nargs not in ("*", "+") else ["1"]
    try:
        return t("1")
    except Exception:
        return "1"


def rpcpy_params():
    """{method: {param names}} rpc.py can send: each subcommand's function run with every option
    set (its client recording), and, where that fails (validation between options), the keyword
    names of its `args.client.M(...)` call read from its source (plus the argparse options when it
    passes `**params`)."""
    from spdk import spdk_rpc
    from spdk.rpc.cmd_parser import args_global
    parser, subparsers = spdk_rpc.create_parser()
    out = {}
    # A subcommand given a dummy file name must not leave files behind: run them elsewhere.
    cwd = os.getcwd()
    tmp = tempfile.TemporaryDirectory()
    os.chdir(tmp.name)
    try:
        return _rpcpy_params(subparsers, args_global, out)
    finally:
        os.chdir(cwd)
        tmp.cleanup()


def _rpcpy_params(subparsers, args_global, out):
    """The body of `rpcpy_params`."""
    for cmd, sub in subparsers.choices.items():
        func = sub.get_default("func")
        if func is None:
            continue
        actions = [a for a in sub._actions if a.dest != "help"]
        ns = argparse.Namespace(**{a.dest: dummy(a) for a in actions})
        rec = Recorder()
        ns.client = rec
        ns.called_rpc_name = cmd
        ns.func = func
        ns.dry_run = False
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                func(ns)
        except BaseException:
            pass
        if rec.calls:
            for m, names in rec.calls.items():
                out.setdefault(m, set()).update(n for n in names if n not in args_global)
            continue
        try:
            src = textwrap.dedent(inspect.getsource(func))
            tree = ast.parse(src)
        except (OSError, TypeError, SyntaxError):
            tree = None
        for node in ast.walk(tree) if tree else []:
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            f = node.func
            if not (isinstance(f.value, ast.Attribute) and f.value.attr == "client"):
                continue
            names = rec.calls.setdefault(f.attr, set())
            for kw in node.keywords:
                if kw.arg is not None:
                    names.add(kw.arg)
                else:  # **params: the subcommand's options, plus params['x'] = ... in the body
                    names.update(a.dest for a in actions if a.dest not in args_global)
                    for n in ast.walk(tree):
                        if isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Constant) \
                                and isinstance(n.ctx, ast.Store):
                            names.add(n.slice.value)
        for m, names in rec.calls.items():
            out.setdefault(m, set()).update(n for n in names if n not in args_global)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-s", "--sock", required=True, help="keel-tgt RPC socket")
    ap.add_argument("--schema", help="SPDK's schema/schema.yaml")
    ap.add_argument("--allow", help='file of "method param" gaps that are known and argued')
    ap.add_argument("-v", "--verbose", action="store_true", help="also list Keel-only names")
    a = ap.parse_args()
    # The methods callable in the target's current state: at run time that leaves out the
    # startup-only ones (bdev_set_options, ...), which answer -1 before reading params; probe
    # those on a --wait-for-rpc target before framework_start_init (spdk-rpc-compat.sh does).
    methods, _ = call(a.sock, "rpc_get_methods", {"current": True})
    rpcpy = rpcpy_params()
    schema, objects = schema_params(a.schema) if a.schema else ({}, {})
    # An extraction that found (almost) nothing would report no gaps: refuse to judge.
    if len(rpcpy) < 100 or (a.schema and len(schema) < 100):
        print(f"spdk-params-probe: read only {len(rpcpy)} rpc.py and {len(schema)} schema "
              "methods: the extraction is broken")
        return 2
    allow = set()
    if a.allow:
        for line in open(a.allow):
            line = line.split("#", 1)[0].split()
            if len(line) == 2:
                allow.add(tuple(line))
    bad = 0

    def compare(label, keel, spdk, srcs):
        nonlocal bad
        for p in sorted(spdk - keel):
            src = "+".join(n for n, d in srcs if p in d)
            if (label, p) in allow:
                print(f"allowed  {label} {p} ({src})")
            else:
                bad += 1
                print(f"MISSING  {label} {p} ({src})")
        if a.verbose and keel - spdk and spdk:
            print(f"keel-only {label}: {' '.join(sorted(keel - spdk))}")

    for m in sorted(methods):
        if m in SKIP:
            print(f"skipped  {m}: {SKIP[m]}")
            continue
        sch = schema.get(m, {})
        py = rpcpy.get(m, set())
        keel, msg = keel_accepted(a.sock, m)
        if keel is None:
            bad += 1
            print(f"IGNORES-UNKNOWN {m}: {msg}")
            continue
        if a.verbose and m not in rpcpy and m not in schema:
            print(f"not-spdk {m}")
        compare(m, keel, py | set(sch), (("rpc.py", py), ("schema", sch)))
        # Object parameters (nvmf_subsystem_add_ns's namespace, ...): their fields too.
        for p, cls in sorted(sch.items()):
            if cls not in objects or p not in keel:
                continue
            inner, msg = keel_accepted(a.sock, m, p, objects[cls])
            label = f"{m}.{p}"
            if inner is None:
                bad += 1
                print(f"IGNORES-UNKNOWN {label}: {msg}")
                continue
            compare(label, inner, objects[cls], (("schema", objects[cls]),))
    print(f"spdk-params-probe: {len(methods)} methods, {bad} gaps")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
