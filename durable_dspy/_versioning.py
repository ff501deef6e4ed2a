"""Detect a program changed under a running workflow, before it can mix two versions' calls.

Each run records, at its start, a fingerprint of the program's structure (its predictors and their
signatures' fields) and, with every LM call, the calling predictor. Replaying with different code compares
both and fails the workflow task with :class:`ProgramChangedError`: the run waits (nothing is lost) until a
worker with the code it started with picks it up, instead of failing with a bare non-determinism trace.
"""

from __future__ import annotations

import hashlib

import dspy

from ._errors import DurableDSPyError

FIX_HINT = (
    "Deploy the version the run started with to finish it (or reset the workflow), and give the changed program "
    "a new name=... (or guard the change with workflow.patched()). See docs/versioning.md."
)


class ProgramChangedError(DurableDSPyError, RuntimeError):
    """The program's code no longer matches a running workflow's history.

    It fails the workflow task (the run waits for a worker with matching code), never the run. DSPy modules may
    catch it (the Chat→JSON adapter fallback does); the run remembers it and raises it again at the next LM call
    and at the end of the run.
    """


def fingerprint(program: dspy.Module) -> tuple[str, str]:
    """A short hash of the program's structure, and the readable description it hashes."""
    parts = []
    for name, predictor in program.named_predictors():
        signature = predictor.signature
        inputs = ",".join(signature.input_fields)
        outputs = ",".join(signature.output_fields)
        parts.append(f"{name}({inputs} -> {outputs})")
    description = "; ".join(parts) or "no predictors"
    return hashlib.sha256(description.encode()).hexdigest()[:16], description


def check_fingerprint(program_name: str, recorded: str, recorded_description: str, current: tuple[str, str]) -> None:
    if recorded and recorded != current[0]:
        raise ProgramChangedError(
            f"Program {program_name!r} changed under this running workflow: it started with predictors "
            f"[{recorded_description}] and the current code has [{current[1]}]. {FIX_HINT}"
        )


def check_call(program_name: str, index: int, recorded_caller: str, current_caller: str) -> None:
    if recorded_caller != current_caller:
        raise ProgramChangedError(
            f"Program {program_name!r} changed under this running workflow: LM call #{index} was made by "
            f"{recorded_caller or 'an unnamed LM call'!r} when the run started, but the current code makes it from "
            f"{current_caller or 'an unnamed LM call'!r}. {FIX_HINT}"
        )
