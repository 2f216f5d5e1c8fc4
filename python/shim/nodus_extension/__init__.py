"""Standard-library stand-in for the `nodus_extension` package inside workers.

ext-runner makes it importable only when the interpreter has no
`nodus_extension` package of its own. It provides `nodus_extension.worker`.
"""
