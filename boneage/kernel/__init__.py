"""The small common kernel: params and their validation (config), the names of the files
stages hand each other (artifacts), the error types (errors), logging and the one error
catcher (runner), the core count (machine), and ages in months and years+months (ages).

May import: nothing of boneage but itself. Every other subpackage may import it.
"""
