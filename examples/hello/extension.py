"""Example extension: greets people and counts words. Standard library only."""
from nodus_extension.worker import register_tool, run_loop


def greet(args):
    return f"Hello, {args['name']}!"


def count_words(args):
    return len(args["text"].split())


register_tool("example.greet", greet)
register_tool("example.count_words", count_words)
run_loop()
