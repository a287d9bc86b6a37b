"""One module per ``pcam`` command: ``add(commands)`` declares its options, ``run(args)`` runs it.

Each module holds the argument parsing and the calls into the package, nothing else; the work is
done by the package's modules. The order of :data:`COMMANDS` is the order of ``pcam --help``.
"""

from __future__ import annotations

from pcam.cli.commands import (
    app,
    calibrate,
    card,
    check,
    demo,
    download,
    evaluate,
    explain,
    export,
    fullcheck,
    predict,
    robustness,
    synth,
    train,
)

COMMANDS = (
    synth,
    check,
    download,
    train,
    calibrate,
    evaluate,
    robustness,
    explain,
    export,
    predict,
    app,
    demo,
    fullcheck,
    card,
)
"""The command modules, in the order ``pcam --help`` lists them."""
