"""Kernels and what runs on them: image headers, boot paths (QEMU -kernel, GRUB), the guest's root, symbols, probe profiles per era, workloads."""
