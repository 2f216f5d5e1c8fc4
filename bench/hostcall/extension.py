from nodus_extension.worker import register_tool, run_loop
from nodus_extension_host import memory

register_tool("bench.noop", lambda args: args.get("n"))


def get(args):
    for _ in range(args.get("n", 1)):
        memory.get("k")
    return args.get("n", 1)


register_tool("bench.get", get)
run_loop()
