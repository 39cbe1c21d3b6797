"""The kernel profile (`gdbfault profile`): every kernel instruction of the workload attributed to its function and call chain."""
