"""Errors a user can cause. Each message names the cause and the fix."""


class PktassertError(Exception):
    """Base class of everything pktassert raises on purpose."""


class ProgramError(PktassertError):
    """The filter under test could not be compiled, found, or loaded (verifier)."""


class InjectError(PktassertError):
    """What was passed to inject() cannot be sent as a frame."""


class AccountingError(PktassertError):
    """Injected frames that the inspector did not account for."""
