"""Errors a user can cause. Each message names the cause and the fix."""


class PktassertError(Exception):
    """Base class of everything pktassert raises on purpose."""


class ProgramError(PktassertError):
    """The filter under test could not be compiled, found, or loaded (verifier)."""


class InjectError(PktassertError):
    """What was passed to inject() cannot be sent as a frame."""


class HostLacks(PktassertError):
    """The host lacks something pktassert needs (not the filter's fault): the test is skipped."""

    def __init__(self, need: str, message: str) -> None:
        super().__init__(message)
        self.need = need


class AccountingError(PktassertError):
    """Injected frames that the inspector did not account for."""
