/* WorkDataHub's compiled hot loops: the sheet scanner of workdatahub/excel/native.py, which
 * says what they do and why, and the assembly of COPY's binary rows for the loader
 * (wdh_copy_rows, workdatahub/warehouse/loader.py). Compiled once per machine with the
 * system's C compiler (native.library) and called through ctypes, which releases the GIL:
 * the scan runs on all cores at once, the encoding beside the load.
 *
 * Reads may look a few bytes past `stop`: the scanned run is followed, in the same buffer,
 * by at least `</sheetData></worksheet>`.
 */
#include <stdint.h>
#include <string.h>

enum { EMPTY = 0, STRING = 1, PLAIN = 2, NUMBER = 3, OTHER = 4, ERROR = 5, INLINE = 6, LONG = 7 };
enum { LT = 60, GT = 62, SLASH = 47, QUOTE = 34, EQUALS = 61, SPACE = 32 };

static inline int is_space(uint8_t byte) {
    return byte == 32 || byte == 10 || byte == 13 || byte == 9;
}

static inline int is_digit(uint8_t byte) { return byte >= 48 && byte <= 57; }

/* -?digits(.digits)? : a number in plain decimals. Returns the length of its shortest
 * spelling, the way Excel writes it and shows it, which is a prefix of it: zeros at the end
 * of the decimals dropped (`202411.0` -> `202411`, `1.50` -> `1.5`, as other programs
 * write some numbers). 0: another spelling (an exponent, a leading zero as in `007`, `.5`),
 * left to the slower path, which spells it as fastexcel shows it. */
static int64_t plain_number(const uint8_t *buf, int64_t start, int64_t stop) {
    int64_t i = start, digits = 0, fraction = 0;
    if (i < stop && buf[i] == 45) i++;
    int64_t lead = i;
    while (i < stop && is_digit(buf[i])) { i++; digits++; }
    if (digits == 0 || (digits > 1 && buf[lead] == 48)) return 0;
    if (i == stop) return stop - start;
    if (buf[i] != 46) return 0;
    int64_t dot = i++;
    while (i < stop && is_digit(buf[i])) { i++; fraction++; }
    if (fraction == 0 || i != stop) return 0;
    while (i > dot + 1 && buf[i - 1] == 48) i--;
    return (i == dot + 1 ? dot : i) - start;
}

/* Significant digits of the plain decimal buf[start:stop] (no spare zeros). */
static int64_t significant(const uint8_t *buf, int64_t start, int64_t stop) {
    int64_t count = 0, seen = 0;
    for (int64_t k = start; k < stop; k++) {
        if (!is_digit(buf[k])) continue;
        if (buf[k] != 48) seen = 1;
        if (seen) count++;
    }
    return count;
}

#define SHOWN_DIGITS 15 /* what Excel keeps of a number, and shows */
#define LONG_MAX_BYTES 64

/* The plain decimal src[0:len] (a sign, digits, a dot, digits; more than 15 significant
 * digits, at most LONG_MAX_BYTES) rounded half away from zero to 15 significant digits, as
 * Excel shows it, zeros at the end of its decimals dropped, written to out (NULL: only
 * measured); returns its length, which is never more than len. */
static int64_t shown(const uint8_t *src, int64_t len, uint8_t *out) {
    uint8_t digits[LONG_MAX_BYTES + 1];
    int64_t n = 0, whole = -1, k = 0;
    int negative = len > 0 && src[0] == 45;
    for (k = negative; k < len; k++) {
        if (src[k] == 46) whole = n;
        else digits[n++] = src[k];
    }
    if (whole < 0) whole = n;
    int64_t first = 0;
    while (first < n && digits[first] == 48) first++;
    int64_t cut = first + SHOWN_DIGITS; /* the first digit dropped */
    if (cut < n) {
        int up = digits[cut] >= 53;
        n = cut;
        for (k = n - 1; up && k >= 0; k--) {
            if (digits[k] == 57) digits[k] = 48;
            else { digits[k]++; up = 0; }
        }
        if (up) { /* 9.99…9 -> 10: one more whole digit */
            memmove(digits + 1, digits, (size_t)n);
            digits[0] = 49;
            n++;
            whole++;
        }
    }
    while (n < whole) digits[n++] = 48; /* whole digits the cut dropped are zeros */
    int64_t end = n;
    while (end > whole && digits[end - 1] == 48) end--;
    int64_t lead = 0; /* a leading zero only for a number below 1 (its whole part) */
    while (lead < whole - 1 && digits[lead] == 48) lead++;
    int64_t size = negative + (whole - lead) + (end > whole ? 1 + end - whole : 0);
    if (out != NULL) {
        int64_t at = 0;
        if (negative) out[at++] = 45;
        for (k = lead; k < whole; k++) out[at++] = digits[k];
        if (end > whole) {
            out[at++] = 46;
            for (k = whole; k < end; k++) out[at++] = digits[k];
        }
    }
    return size;
}

/* Scan buf[start:stop], a run of whole `<row>` elements, into the cell arrays (one entry
 * per cell holding something); out[0] is how many, out[1] how many cells hold a formula
 * (`<f`), out[2] the highest shared string entry used (-1: none). Returns 0 on success, anything else is the position the scanner did not
 * understand, plus one. */
int64_t wdh_cells(const uint8_t *buf, int64_t start, int64_t stop, int32_t *rows,
                  int16_t *cols, int8_t *kinds, int64_t *a, uint32_t *b, uint16_t *styles,
                  int64_t *out) {
    int64_t n = 0, i = start, formulas = 0, shared_max = -1;
#define GIVE_UP(at) \
    do { out[0] = n; out[1] = formulas; out[2] = shared_max; return (at) + 1; } while (0)
    while (i < stop) {
        uint8_t byte = buf[i];
        if (byte != LT) {
            if (is_space(byte)) { i++; continue; }
            GIVE_UP(i);
        }
        uint8_t second = buf[i + 1];
        if (second == 114 && buf[i + 2] == 111 && buf[i + 3] == 119) { /* <row */
            int64_t j = i + 4;
            while (j < stop && buf[j] != GT) j++;
            i = j + 1;
            continue;
        }
        if (second == SLASH && buf[i + 2] == 114 && buf[i + 3] == 111) { /* </row> */
            i += 6;
            continue;
        }
        if (second != 99 || !(buf[i + 2] == SPACE || buf[i + 2] == GT)) GIVE_UP(i); /* <c */
        /* attributes, name="value" */
        int64_t j = i + 2, col = 0, row = 0, style = 0;
        int shared = 0, number = 1, inline_string = 0, known_attributes = 1;
        for (;;) {
            while (j < stop && is_space(buf[j])) j++;
            if (j >= stop) GIVE_UP(i);
            if (buf[j] == GT || buf[j] == SLASH) break;
            int64_t name = j;
            while (j < stop && buf[j] != EQUALS && buf[j] != GT && !is_space(buf[j])) j++;
            if (j + 1 >= stop || buf[j] != EQUALS || buf[j + 1] != QUOTE) GIVE_UP(i);
            int64_t value = j + 2, end = value;
            while (end < stop && buf[end] != QUOTE) end++;
            if (end >= stop) GIVE_UP(i);
            if (j - name == 1 && buf[name] == 114) { /* r */
                int64_t k = value;
                while (k < end && buf[k] >= 65 && buf[k] <= 90) {
                    col = col * 26 + (buf[k] - 64);
                    k++;
                    if (col > 16384) GIVE_UP(i);
                }
                while (k < end && is_digit(buf[k]) && row < 100000000) {
                    row = row * 10 + (buf[k] - 48);
                    k++;
                }
                if (k != end || col == 0 || col > 16384 || row == 0) GIVE_UP(i);
            } else if (j - name == 1 && buf[name] == 116) { /* t */
                shared = end - value == 1 && buf[value] == 115;
                number = end - value == 1 && buf[value] == 110;
                inline_string = end - value == 9 && memcmp(buf + value, "inlineStr", 9) == 0;
            } else if (j - name == 1 && buf[name] == 115) { /* s */
                for (int64_t k = value; k < end; k++) {
                    if (!is_digit(buf[k]) || style > 6553) GIVE_UP(i);
                    style = style * 10 + (buf[k] - 48);
                }
                if (style > 65535) GIVE_UP(i); /* Excel allows 64,000 cell formats */
            } else {
                known_attributes = 0;
            }
            j = end + 1;
        }
        if (col == 0) GIVE_UP(i); /* calamine would place it after the previous cell */
        if (buf[j] == SLASH) { /* <c …/>: nothing in it */
            i = j + 2;
            continue;
        }
        int64_t p = j + 1;
        if (buf[p] == LT && buf[p + 1] == 102) { /* <f…> the formula: its value follows */
            formulas++;
            while (p < stop && buf[p] != GT) p++;
            if (buf[p - 1] != SLASH) {
                while (p + 2 < stop && !(buf[p] == LT && buf[p + 1] == SLASH && buf[p + 2] == 102))
                    p++;
                while (p < stop && buf[p] != GT) p++;
            }
            p++;
        }
        rows[n] = (int32_t)row;
        cols[n] = (int16_t)col;
        styles[n] = (uint16_t)style;
        a[n] = i;
        if (buf[p] == LT && buf[p + 1] == 118 && buf[p + 2] == GT) { /* <v>…</v></c> */
            int64_t first = p + 3, last = first;
            while (last < stop && buf[last] != LT) last++;
            if (last + 7 < stop && buf[last + 1] == SLASH && buf[last + 2] == 118
                && buf[last + 3] == GT && buf[last + 4] == LT && buf[last + 5] == SLASH
                && buf[last + 6] == 99 && buf[last + 7] == GT) {
                kinds[n] = OTHER;
                b[n] = (uint32_t)(last + 8 - i);
                if (shared) {
                    int64_t index = 0;
                    for (int64_t k = first; k < last; k++) {
                        if (!is_digit(buf[k]) || index > 100000000) {
                            index = -1;
                            break;
                        }
                        index = index * 10 + (buf[k] - 48);
                    }
                    if (index >= 0 && last > first) {
                        kinds[n] = STRING;
                        a[n] = index;
                        if (index > shared_max) shared_max = index;
                    }
                } else if (number) {
                    int64_t shortest = plain_number(buf, first, last);
                    kinds[n] = shortest ? PLAIN : NUMBER;
                    a[n] = first;
                    b[n] = (uint32_t)(shortest ? shortest : last - first);
                    /* a double written in full (`2.0000499999999999` for a typed 2.00005):
                     * shown to 15 digits as it is assembled (LONG), or, longer than `shown`
                     * takes, on the slower path (NUMBER), which does the same. 16 bytes hold
                     * at most 15 digits and a dot: most numbers stop at the first test. */
                    if (shortest - (buf[first] == 45) > SHOWN_DIGITS + 1
                        && memchr(buf + first, 46, (size_t)shortest) != NULL
                        && significant(buf, first, first + shortest) > SHOWN_DIGITS) {
                        kinds[n] = shortest <= LONG_MAX_BYTES ? LONG : NUMBER;
                        if (kinds[n] == NUMBER) b[n] = (uint32_t)(last - first);
                    } /* (an integer written out keeps its digits) */
                }
                n++;
                i = last + 8;
                continue;
            }
        }
        /* <is><t>text</t></is></c>, `<t xml:space="preserve">` too, no formula, no attribute
         * but r, s and t: the bytes from `<t` to the text's end (still XML-escaped), so that
         * cells group by how their text is written, `xml:space` included */
        if (inline_string && known_attributes && p == j + 1) {
            static const char plain[] = "<is><t>", kept[] = "<is><t xml:space=\"preserve\">";
            static const char tail[] = "</t></is></c>";
            int64_t text = -1;
            if (p + 7 < stop && memcmp(buf + p, plain, 7) == 0) text = p + 7;
            else if (p + 28 < stop && memcmp(buf + p, kept, 28) == 0) text = p + 28;
            if (text >= 0) {
                int64_t last = text;
                while (last < stop && buf[last] != LT) last++;
                if (last < stop && memcmp(buf + last, tail, 13) == 0) {
                    kinds[n] = INLINE;
                    a[n] = p + 4;
                    b[n] = (uint32_t)(last - (p + 4));
                    n++;
                    i = last + 13;
                    continue;
                }
            }
        }
        int64_t close = p;
        while (close + 3 < stop && !(buf[close] == LT && buf[close + 1] == SLASH
                                     && buf[close + 2] == 99 && buf[close + 3] == GT))
            close++;
        if (close + 3 >= stop) GIVE_UP(i);
        for (int64_t k = p; k + 1 < close; k++)
            if (buf[k] == LT && buf[k + 1] == 102) { formulas++; break; }
        /* nothing after the formula (the reader's scan flags it), `<c></c>`, or another shape */
        kinds[n] = p >= close ? EMPTY : OTHER;
        b[n] = (uint32_t)(close + 4 - i);
        n++;
        i = close + 4;
    }
#undef GIVE_UP
    out[0] = n;
    out[1] = formulas;
    out[2] = shared_max;
    return 0;
}

/* Group cells[0..count) by their bytes buf[a[n] : a[n] + b[n]] and by[n] (when by is given),
 * the groups numbered in the order they first come: group[k] for each cell, first[g] the
 * position in `cells` of group g's first cell. table: 2^bits slots set to -1 by the caller,
 * 2^bits >= 2 * count. Returns the number of groups. */
int64_t wdh_group(const uint8_t *buf, const int64_t *a, const uint32_t *b, const uint16_t *by,
                  const int64_t *cells, int64_t count, int32_t *table, int64_t bits,
                  int64_t *group, int64_t *first) {
    const uint64_t mask = ((uint64_t)1 << bits) - 1;
    int64_t groups = 0;
    for (int64_t k = 0; k < count; k++) {
        const int64_t n = cells[k];
        const uint8_t *text = buf + a[n];
        const uint32_t length = b[n];
        const uint64_t key = by ? by[n] : 0;
        uint64_t hash = 14695981039346656037ULL ^ key; /* FNV-1a */
        for (uint32_t i = 0; i < length; i++) {
            hash ^= text[i];
            hash *= 1099511628211ULL;
        }
        hash ^= hash >> 32;
        for (uint64_t slot = hash & mask;; slot = (slot + 1) & mask) {
            const int64_t g = table[slot];
            if (g < 0) {
                table[slot] = (int32_t)groups;
                first[groups] = k;
                group[k] = groups++;
                break;
            }
            const int64_t m = cells[first[g]];
            if (b[m] == length && (by ? by[m] : 0) == key
                && memcmp(buf + a[m], text, length) == 0) {
                group[k] = g;
                break;
            }
        }
    }
    return groups;
}

/* Which cells are there, and where: a string cell whose table entry is null (start -1) is
 * made EMPTY, an ERROR cell (null, but there as fastexcel sees it) stays. out: the last
 * row, the first and the last column of the cells left, 0 when none is. */
void wdh_extent(const int64_t *spans, int64_t nspans, const int32_t *rows, const int16_t *cols,
                int8_t *kinds, const int64_t *a, const int64_t *starts, int64_t *out) {
    int64_t height = 0, first = 1 << 20, last = 0;
    for (int64_t span = 0; span < nspans; span++) {
        int64_t from = spans[2 * span], to = from + spans[2 * span + 1];
        for (int64_t n = from; n < to; n++) {
            if (kinds[n] == STRING && starts[a[n]] < 0) kinds[n] = EMPTY;
            if (kinds[n] == EMPTY) continue;
            if (rows[n] > height) height = rows[n];
            if (cols[n] < first) first = cols[n];
            if (cols[n] > last) last = cols[n];
        }
    }
    out[0] = height;
    out[1] = last ? first : 0;
    out[2] = last;
}

/* The cell at each (column, row - 1) of the frame (owner: width × height, filled with -1
 * by the caller: a column's cells side by side; the caller holds fewer than 2^31 cells);
 * of two cells at one place the later wins. spans: (start, count) pairs. */
void wdh_owners(const int64_t *spans, int64_t nspans, const int32_t *rows, const int16_t *cols,
                const int8_t *kinds, int64_t first_col, int64_t height, int32_t *owner) {
    for (int64_t span = 0; span < nspans; span++) {
        int64_t from = spans[2 * span], to = from + spans[2 * span + 1];
        for (int64_t n = from; n < to; n++)
            if (kinds[n] != EMPTY)
                owner[(int64_t)(cols[n] - first_col) * height + (rows[n] - 1)] = (int32_t)n;
    }
}

/* Frame columns first…last - 1 as Arrow large-string buffers, in two passes. The first
 * sets each column's offsets (offsets[j], height + 1 from 0) and validity (valid[j]); the
 * caller then places column j's bytes at bases[j] of `data` and the second pass copies
 * them (from the XML for a plain number, else from the string table; an ERROR cell is
 * null). */
void wdh_measure(const int32_t *owner, int64_t height, int64_t first, int64_t last,
                 const int8_t *kinds, const int64_t *a, const uint32_t *b,
                 const int64_t *starts, const int64_t *ends, int64_t *offsets, uint8_t *valid,
                 const uint8_t *buf) {
    for (int64_t j = 0; j < last - first; j++) {
        const int32_t *column = owner + (first + j) * height;
        int64_t *offset = offsets + j * (height + 1);
        uint8_t *ok = valid + j * height;
        offset[0] = 0;
        for (int64_t r = 0; r < height; r++) {
            int64_t n = column[r], size = 0;
            ok[r] = 0;
            if (n >= 0 && kinds[n] == PLAIN) {
                size = b[n];
                ok[r] = 1;
            } else if (n >= 0 && kinds[n] == LONG) {
                size = shown(buf + a[n], b[n], NULL);
                ok[r] = 1;
            } else if (n >= 0 && kinds[n] == STRING) {
                size = ends[a[n]] - starts[a[n]];
                ok[r] = 1;
            }
            offset[r + 1] = offset[r] + size;
        }
    }
}

void wdh_fill(const int32_t *owner, int64_t height, int64_t first, int64_t last,
              const int8_t *kinds, const int64_t *a, const uint32_t *b, const uint8_t *buf,
              const uint8_t *strings, const int64_t *starts, const int64_t *offsets,
              const uint8_t *valid, const int64_t *bases, uint8_t *data) {
    for (int64_t j = 0; j < last - first; j++) {
        const int32_t *column = owner + (first + j) * height;
        const int64_t *offset = offsets + j * (height + 1);
        const uint8_t *ok = valid + j * height;
        uint8_t *to = data + bases[j];
        for (int64_t r = 0; r < height; r++) {
            if (!ok[r]) continue;
            int64_t n = column[r];
            if (kinds[n] == LONG) {
                shown(buf + a[n], b[n], to + offset[r]);
                continue;
            }
            const uint8_t *from = kinds[n] == PLAIN ? buf + a[n] : strings + starts[a[n]];
            memcpy(to + offset[r], from, (size_t)(offset[r + 1] - offset[r]));
        }
    }
}

/* COPY's binary rows, back to back, into `out` (which should hold exactly their bytes);
 * returns the bytes written. Row r is the field count (big-endian int16), then column c's field:
 *   FIELD_FIXED: widths[c] bytes from data[c] + r * widths[c] (length prefix and value,
 *                already big-endian);
 *   FIELD_TEXT:  the length (big-endian int32), then data[c][offsets[c][r]:offsets[c][r+1]]
 *                (an Arrow large-string column);
 *   FIELD_CONST: the same widths[c] bytes from data[c] in every row;
 * and where nulls[c] is not 0 and nulls[c][r] is, the field is the length -1 alone. The
 * pointers come as integers (numpy addresses). Never writes past `capacity` bytes: -1 when
 * the rows would not fit. */
enum { FIELD_FIXED = 0, FIELD_TEXT = 1, FIELD_CONST = 2 };

int64_t wdh_copy_rows(int64_t nrows, int64_t ncols, const int64_t *kinds,
                      const int64_t *widths, const int64_t *data, const int64_t *offsets,
                      const int64_t *nulls, uint8_t *out, int64_t capacity) {
    uint8_t *to = out;
    for (int64_t r = 0; r < nrows; r++) {
        if (out + capacity - to < 2) return -1;
        *to++ = (uint8_t)(ncols >> 8);
        *to++ = (uint8_t)ncols;
        for (int64_t c = 0; c < ncols; c++) {
            const uint8_t *null = (const uint8_t *)(intptr_t)nulls[c];
            if (null && null[r]) {
                if (out + capacity - to < 4) return -1;
                memset(to, 0xff, 4);
                to += 4;
                continue;
            }
            const uint8_t *from = (const uint8_t *)(intptr_t)data[c];
            if (kinds[c] == FIELD_TEXT) {
                const int64_t *at = (const int64_t *)(intptr_t)offsets[c];
                uint32_t size = (uint32_t)(at[r + 1] - at[r]);
                if (out + capacity - to < 4 + (int64_t)size) return -1;
                to[0] = (uint8_t)(size >> 24);
                to[1] = (uint8_t)(size >> 16);
                to[2] = (uint8_t)(size >> 8);
                to[3] = (uint8_t)size;
                memcpy(to + 4, from + at[r], size);
                to += 4 + size;
            } else {
                int64_t width = widths[c];
                if (out + capacity - to < width) return -1;
                memcpy(to, kinds[c] == FIELD_FIXED ? from + r * width : from, (size_t)width);
                to += width;
            }
        }
    }
    return to - out;
}
