/* plan/presets: model and hardware presets from TSV data files (data/plan/models.tsv, hardware.tsv).
 *
 * Format: '#' lines are comments; the first other line names the columns (tab-separated);
 * each following line is one preset.  Columns are found by name, so files may add columns;
 * '-' or an empty field means unset.  Numbers take an optional suffix M (1e6), B (1e9),
 * T (1e12).  Errors name the file, line and column.  Does not know any preset itself. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "plan/plan.h"
#include "util/err.h"

#define MAX_COLS 32
#define LINE_CAP 4096

struct tsv {
    const char *path;
    int line;
    char *col[MAX_COLS];
    int n_col;
    char *head[MAX_COLS];
    int n_head;
};

static int split(char *s, char **out)
{
    int n = 0;
    s[strcspn(s, "\r\n")] = '\0';
    while (n < MAX_COLS) {
        out[n++] = s;
        char *t = strchr(s, '\t');
        if (!t)
            break;
        *t = '\0';
        s = t + 1;
    }
    return n;
}

static const char *field(const struct tsv *t, const char *name)
{
    for (int i = 0; i < t->n_head && i < t->n_col; i++)
        if (strcmp(t->head[i], name) == 0)
            return strcmp(t->col[i], "-") == 0 ? "" : t->col[i];
    return "";
}

static enum kvx_status num(const struct tsv *t, const char *name, double *out, struct kvx_err *err)
{
    const char *s = field(t, name);
    *out = 0;
    if (!*s)
        return KVX_OK;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    double mult = *end == 'M' ? 1e6 : *end == 'B' ? 1e9 : *end == 'T' ? 1e12 : 1;
    end += mult != 1;
    if (end == s || *end || errno || !isfinite(v) || v < 0)
        return kvx_err_set(err, KVX_ERR_FORMAT, "%s:%d: column '%s': '%s' is not a number >= 0",
                           t->path, t->line, name, s);
    *out = v * mult;
    return KVX_OK;
}

static enum kvx_status inum(const struct tsv *t, const char *name, int32_t *out,
                            struct kvx_err *err)
{
    double v;
    enum kvx_status st = num(t, name, &v, err);
    if (st == KVX_OK && (v != floor(v) || v > 1e9))
        st = kvx_err_set(err, KVX_ERR_FORMAT, "%s:%d: column '%s': not an integer", t->path,
                         t->line, name);
    *out = (int32_t)v;
    return st;
}

static enum kvx_status model_row(const struct tsv *t, struct kvx_plan_model *m,
                                 struct kvx_err *err)
{
    memset(m, 0, sizeof *m);
    snprintf(m->name, sizeof m->name, "%s", field(t, "name"));
    snprintf(m->pattern, sizeof m->pattern, "%s", field(t, "pattern"));
    snprintf(m->source, sizeof m->source, "%s", field(t, "source"));
    double ctx = 0;
    enum kvx_status st;
    if ((st = num(t, "params", &m->n_params, err)) || (st = num(t, "active", &m->n_active, err)) ||
        (st = inum(t, "layers", &m->n_layer, err)) || (st = inum(t, "kv_heads", &m->kv_heads, err)) ||
        (st = inum(t, "head_dim", &m->head_dim, err)) || (st = inum(t, "window", &m->window, err)) ||
        (st = inum(t, "g_kv_heads", &m->g_kv_heads, err)) ||
        (st = inum(t, "g_head_dim", &m->g_head_dim, err)) ||
        (st = inum(t, "shared_from", &m->shared_from, err)) ||
        (st = inum(t, "latent_c", &m->latent_c, err)) ||
        (st = inum(t, "latent_rope", &m->latent_rope, err)) ||
        (st = inum(t, "ratio_c", &m->ratio_c, err)) || (st = inum(t, "ratio_h", &m->ratio_h, err)) ||
        (st = inum(t, "index_dim", &m->index_dim, err)) || (st = num(t, "ctx_max", &ctx, err)))
        return st;
    m->ctx_max = (int64_t)ctx;
    if (!m->name[0] || m->n_layer <= 0 || !m->pattern[0])
        return kvx_err_set(err, KVX_ERR_FORMAT, "%s:%d: a model needs name, layers and pattern",
                           t->path, t->line);
    return KVX_OK;
}

static enum kvx_status hw_row(const struct tsv *t, struct kvx_plan_hw *h, struct kvx_err *err)
{
    memset(h, 0, sizeof *h);
    snprintf(h->name, sizeof h->name, "%s", field(t, "name"));
    snprintf(h->source, sizeof h->source, "%s", field(t, "source"));
    double gb, tbs;
    enum kvx_status st;
    if ((st = num(t, "mem_gb", &gb, err)) || (st = num(t, "bw_tb_s", &tbs, err)))
        return st;
    h->mem_bytes = gb * 1e9;
    h->bw_bytes_s = tbs * 1e12;
    if (!h->name[0] || gb <= 0 || tbs <= 0)
        return kvx_err_set(err, KVX_ERR_FORMAT, "%s:%d: hardware needs name, mem_gb, bw_tb_s",
                           t->path, t->line);
    return KVX_OK;
}

typedef enum kvx_status (*row_fn)(const struct tsv *t, void *row, struct kvx_err *err);

/* Read every row of `path` into a growing array of elem-byte rows. */
static enum kvx_status load(const char *path, size_t elem, row_fn fn, void **out, int32_t *n,
                            struct kvx_err *err)
{
    *out = NULL;
    *n = 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return kvx_err_set(err, KVX_ERR_IO, "cannot open presets file %s", path);
    char line[LINE_CAP], head[LINE_CAP];   /* head: the column names stay in it */
    struct tsv t = {.path = path};
    char *rows = NULL;
    int32_t cap = 0;
    enum kvx_status st = KVX_OK;
    while (st == KVX_OK && fgets(t.n_head ? line : head, LINE_CAP, f)) {
        t.line++;
        char *s = t.n_head ? line : head;
        if (s[0] == '#' || s[strspn(s, " \t\r\n")] == '\0')
            continue;
        if (!t.n_head) {
            t.n_head = split(head, t.head);
            continue;
        }
        t.n_col = split(line, t.col);
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            char *grown = realloc(rows, (size_t)cap * elem);
            if (!grown) {
                st = kvx_err_set(err, KVX_ERR_NOMEM, "presets: out of memory");
                break;
            }
            rows = grown;
        }
        if ((st = fn(&t, rows + (size_t)*n * elem, err)) == KVX_OK)
            (*n)++;
    }
    fclose(f);
    if (st != KVX_OK) {
        free(rows);
        *n = 0;
        return st;
    }
    *out = rows;
    return KVX_OK;
}

static enum kvx_status model_fn(const struct tsv *t, void *row, struct kvx_err *err)
{
    return model_row(t, row, err);
}

static enum kvx_status hw_fn(const struct tsv *t, void *row, struct kvx_err *err)
{
    return hw_row(t, row, err);
}

enum kvx_status kvx_plan_models_load(const char *path, struct kvx_plan_model **out, int32_t *n,
                                     struct kvx_err *err)
{
    void *rows;
    enum kvx_status st = load(path, sizeof **out, model_fn, &rows, n, err);
    *out = rows;
    return st;
}

enum kvx_status kvx_plan_hw_load(const char *path, struct kvx_plan_hw **out, int32_t *n,
                                 struct kvx_err *err)
{
    void *rows;
    enum kvx_status st = load(path, sizeof **out, hw_fn, &rows, n, err);
    *out = rows;
    return st;
}

/* "unknown X 'name' (known: a, b, c)" */
static enum kvx_status not_found(const char *what, const char *name, const char *first,
                                 size_t stride, int32_t n, struct kvx_err *err)
{
    char known[384] = "";
    size_t len = 0;
    for (int32_t i = 0; i < n && len + 1 < sizeof known; i++)
        len += (size_t)snprintf(known + len, sizeof known - len, "%s%s", i ? ", " : "",
                                first + (size_t)i * stride);
    return kvx_err_set(err, KVX_ERR_NOT_FOUND, "unknown %s '%s' (known: %s)", what, name, known);
}

enum kvx_status kvx_plan_model_find(const struct kvx_plan_model *list, int32_t n, const char *name,
                                    const struct kvx_plan_model **out, struct kvx_err *err)
{
    for (int32_t i = 0; i < n; i++)
        if (strcasecmp(list[i].name, name) == 0) {
            *out = &list[i];
            return KVX_OK;
        }
    return not_found("model preset", name, n ? list[0].name : "", sizeof *list, n, err);
}

enum kvx_status kvx_plan_hw_find(const struct kvx_plan_hw *list, int32_t n, const char *name,
                                 const struct kvx_plan_hw **out, struct kvx_err *err)
{
    for (int32_t i = 0; i < n; i++)
        if (strcasecmp(list[i].name, name) == 0) {
            *out = &list[i];
            return KVX_OK;
        }
    return not_found("GPU", name, n ? list[0].name : "", sizeof *list, n, err);
}
