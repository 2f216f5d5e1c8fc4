"""Calls from a worker to its host under ext-runner (standard library only).

    from nodus_extension_host import memory, invoke_tool, HostCallError

    memory.put("greeting", {"text": "hi"})     # needs memory.write
    memory.get("greeting")                     # needs memory.read
    memory.keys(prefix="gr")                   # needs memory.read
    memory.delete("greeting")                  # needs memory.write
    invoke_tool("other.tool", {"x": 1})        # needs tool.invoke

Each call is one line to the host, {"op": "host_call", "id", "call", "params"},
answered on stdin with {"id", "ok", "result" | "error", "capability"}. A call
the manifest does not grant raises HostCallError naming the capability. Works
with the reference's worker module and with ours.
"""
import itertools
import json
import sys

_ids = itertools.count(1)
# Lines read while waiting for an answer that were not the answer (the runner
# holds invokes back during a host call, so this normally stays empty).
_stash = []


class HostCallError(Exception):
    """The host refused or failed a call; `capability` names what was missing."""

    def __init__(self, message, capability=None, error_class=None):
        super().__init__(message)
        self.capability = capability
        self.error_class = error_class


def call(name, /, **params):
    """Send host call `name` with `params` and wait for its answer."""
    call_id = f"hc-{next(_ids)}"
    sys.stdout.write(json.dumps({"op": "host_call", "id": call_id, "call": name, "params": params}) + "\n")
    sys.stdout.flush()
    while True:
        line = sys.stdin.readline()
        if not line:
            raise HostCallError(f"host call {name}: the host closed the connection")
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict) and msg.get("id") == call_id and "op" not in msg:
            if msg.get("ok"):
                return msg.get("result")
            raise HostCallError(msg.get("error", "unknown error"), msg.get("capability"), msg.get("error_class"))
        _stash.append(line)


class _Memory:
    """This extension's namespace of the host's memory store."""

    def get(self, key, default=None):
        value = call("memory.get", key=key)
        return default if value is None else value

    def put(self, key, value):
        call("memory.put", key=key, value=value)

    def delete(self, key):
        return call("memory.delete", key=key)

    def keys(self, prefix=""):
        return call("memory.keys", prefix=prefix)


memory = _Memory()


def invoke_tool(name, args=None, extension=None):
    """Invoke a tool of the host's registry; returns its result.

    When several loaded extensions provide a tool of that name, the call is
    refused unless ``extension`` names the one to call."""
    if extension is None:
        return call("tool.invoke", name=name, args=args or {})
    return call("tool.invoke", name=name, args=args or {}, extension=extension)
