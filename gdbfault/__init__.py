"""gdbfault: live, exact instrumentation of a kernel's page-fault path.

QEMU runs the kernel, GDB attaches to QEMU's gdbstub, and probes counted
inside GDB (gdbscripts/) report how often each function on the fault path
ran and what each path cost.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
