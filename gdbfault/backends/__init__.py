"""The backends that carry out one resolved run: GDB breakpoints in a replay of a recording, the zero-stop TCG plugin, a QEMU already running; and the hooks a feature plugs into them."""
