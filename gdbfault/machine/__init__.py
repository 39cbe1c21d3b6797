"""The machines a run drives: QEMU (one supervised process, its config, record/replay copies) and GDB over MI."""
