"""Extension worker runtime (standard library only; same behaviour as the
reference package's `nodus_extension.worker`, without importing pydantic).

    from nodus_extension.worker import register_tool, run_loop

    register_tool("myapp.greet", lambda args: f"Hello, {args['name']}!")
    run_loop()

Protocol (host -> worker):
    {"id": "uuid", "op": "invoke", "name": "tool.name", "args": {...}}
    {"op": "shutdown"}
Protocol (worker -> host):
    {"id": "uuid", "ok": true, "result": ...}
    {"id": "uuid", "ok": false, "error": "message"}
"""
import json
import sys

_REGISTRY = {}


def register_tool(name, handler):
    """Register a tool in this worker process. Must be called before run_loop()."""
    _REGISTRY[name] = handler


def run_loop(*, stdin=None, stdout=None):
    """Enter the stdin/stdout message loop. Blocks until shutdown message received."""
    _in = stdin if stdin is not None else sys.stdin
    _out = stdout if stdout is not None else sys.stdout

    for line in _lines(_in):
        line = line.strip()
        if not line:
            continue
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue

        op = msg.get("op")

        if op == "shutdown":
            break

        if op == "invoke":
            msg_id = msg.get("id", "")
            tool_name = msg.get("name", "")
            args = msg.get("args") or {}
            handler = _REGISTRY.get(tool_name)
            if handler is None:
                _send(_out, {"id": msg_id, "ok": False, "error": f"tool not found: {tool_name!r}"})
                continue
            try:
                result = handler(args)
                _send(_out, {"id": msg_id, "ok": True, "result": result})
            except Exception as exc:
                _send(_out, {"id": msg_id, "ok": False, "error": str(exc)})

        else:
            msg_id = msg.get("id", "")
            _send(_out, {"id": msg_id, "ok": False, "error": f"unknown op: {op!r}"})


def _lines(_in):
    """Input lines, after any that a host call read while waiting for its answer."""
    stash = sys.modules.get("nodus_extension_host")
    stash = getattr(stash, "_stash", None)
    for line in _in:
        while stash:
            yield stash.pop(0)
        yield line
    while stash:
        yield stash.pop(0)


def _send(out, obj):
    out.write(json.dumps(obj) + "\n")
    out.flush()
