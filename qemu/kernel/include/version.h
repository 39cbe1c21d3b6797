/* Kernel version strings; LAB_VARIANT comes from the Makefile. */
#ifndef _LAB_VERSION_H
#define _LAB_VERSION_H

#ifndef LAB_VARIANT
#define LAB_VARIANT "vanilla"
#endif

#define UTS_RELEASE "2.0.36-lab"
#define LAB_BANNER "gdbfault lab kernel " UTS_RELEASE " (" LAB_VARIANT ") #1"

#endif
