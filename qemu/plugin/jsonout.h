/* jsonout.h — JSON output helpers shared by gdbfault's TCG plugins. */
#ifndef GDBFAULT_JSONOUT_H
#define GDBFAULT_JSONOUT_H

#include <stdio.h>

/* A JSON string: quotes and backslashes escaped, control and non-ASCII bytes as \u00XX. */
static inline void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            fprintf(f, "\\%c", c);
        } else if (c < 0x20 || c >= 0x7f) {
            fprintf(f, "\\u%04x", c);
        } else {
            fputc(c, f);
        }
    }
    fputc('"', f);
}

#endif
