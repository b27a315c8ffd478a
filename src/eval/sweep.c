/* eval/sweep: reports of a sweep over KV cache configurations — the Pareto frontier of
 * quality (mean KLD) against KV bytes per token, and the files PREFIX.csv, PREFIX.md and
 * PREFIX.svg (hand-written SVG in the style of plan/svg.c).  Measuring is the caller's job. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval/eval.h"
#include "util/err.h"

void kvx_eval_pareto(const struct kvx_eval_sweep_row *rows, int32_t n, bool *on_front)
{
    for (int32_t i = 0; i < n; i++) {
        on_front[i] = true;
        for (int32_t j = 0; j < n && on_front[i]; j++) {
            const bool no_worse = rows[j].bytes_per_token <= rows[i].bytes_per_token &&
                                  rows[j].kld_mean <= rows[i].kld_mean;
            const bool better = rows[j].bytes_per_token < rows[i].bytes_per_token ||
                                rows[j].kld_mean < rows[i].kld_mean;
            if (j != i && no_worse && better)
                on_front[i] = false;
        }
    }
}

static bool any_passkey(const struct kvx_eval_sweep_row *rows, int32_t n)
{
    for (int32_t i = 0; i < n; i++)
        if (rows[i].passkey >= 0.0)
            return true;
    return false;
}

/* A CSV field: quoted, inner quotes doubled. */
static void csv_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; s && *s; s++) {
        if (*s == '"')
            fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static void write_csv(FILE *f, const struct kvx_eval_sweep_row *rows, int32_t n, const bool *front)
{
    fprintf(f, "name,kv_bytes_per_token,kld_mean,kld_p99,top1,ppl_ratio,passkey,pareto,options\n");
    for (int32_t i = 0; i < n; i++) {
        const struct kvx_eval_sweep_row *r = &rows[i];
        csv_str(f, r->name);
        fprintf(f, ",%.1f,%.6g,%.6g,%.6f,%.6f,", r->bytes_per_token, r->kld_mean, r->kld_p99,
                r->top1, r->ppl_ratio);
        if (r->passkey >= 0.0)
            fprintf(f, "%.4f", r->passkey);
        fprintf(f, ",%d,", front[i] ? 1 : 0);
        csv_str(f, r->options);
        fputc('\n', f);
    }
}

/* A Markdown table cell: '|' would end the cell. */
static void md_str(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        if (*s == '|')
            fputc('\\', f);
        fputc(*s, f);
    }
}

static void write_md(FILE *f, const struct kvx_eval_sweep_row *rows, int32_t n, const bool *front,
                     const char *title)
{
    const bool pk = any_passkey(rows, n);
    fprintf(f, "# %s\n\n| config | options | KV bytes/token | mean KLD | p99 KLD | top-1 | "
               "ppl ratio |%s Pareto |\n|---|---|---:|---:|---:|---:|---:|%s:---:|\n",
            title, pk ? " passkey |" : "", pk ? "---:|" : "");
    for (int32_t i = 0; i < n; i++) {
        const struct kvx_eval_sweep_row *r = &rows[i];
        fputs("| ", f);
        md_str(f, r->name);
        fputs(" | `", f);
        md_str(f, r->options && *r->options ? r->options : "(defaults)");
        fprintf(f, "` | %.0f | %.3g | %.3g | %.4f | %.4f |", r->bytes_per_token, r->kld_mean,
                r->kld_p99, r->top1, r->ppl_ratio);
        if (pk) {
            if (r->passkey >= 0.0)
                fprintf(f, " %.2f |", r->passkey);
            else
                fputs(" — |", f);
        }
        fprintf(f, " %s |\n", front[i] ? "yes" : "");
    }
}

/* ------------------------------------------------------------------------------------------ */
/* SVG: x = KV bytes per token (linear, from 0), y = mean KLD (log10); a KLD of 0 (an exact
 * cache) is drawn on a separate "0" line below the lowest decade. */

#define W 820
#define H 520
#define X0 90
#define X1 780
#define Y0 50
#define Y1 430
#define YZ 470           /* the "0" line */

struct axes {
    double xmax, xstep;  /* bytes */
    double lo, hi;       /* log10 of the KLD range */
};

static double sx(const struct axes *a, double b) { return X0 + (X1 - X0) * b / a->xmax; }

static double sy(const struct axes *a, double k)
{
    if (!(k > 0.0))
        return YZ;
    return Y1 - (Y1 - Y0) * (log10(k) - a->lo) / (a->hi - a->lo);
}

static struct axes axes_of(const struct kvx_eval_sweep_row *rows, int32_t n)
{
    struct axes a = {.xmax = 0.0};
    double mn = INFINITY, mx = 0.0;
    for (int32_t i = 0; i < n; i++) {
        a.xmax = rows[i].bytes_per_token > a.xmax ? rows[i].bytes_per_token : a.xmax;
        if (rows[i].kld_mean > 0.0) {
            mn = rows[i].kld_mean < mn ? rows[i].kld_mean : mn;
            mx = rows[i].kld_mean > mx ? rows[i].kld_mean : mx;
        }
    }
    if (!(mx > 0.0))
        mn = 1e-4, mx = 1e-3;
    a.lo = floor(log10(mn));
    a.hi = ceil(log10(mx));
    if (a.hi <= a.lo)
        a.hi = a.lo + 1;
    /* about six gridlines, 1, 2 or 5 times a power of ten apart */
    const double raw = (a.xmax > 6.0 ? a.xmax : 6.0) / 6.0, mag = pow(10.0, floor(log10(raw)));
    const double r = raw / mag;
    a.xstep = (r <= 1.0 ? 1.0 : r <= 2.0 ? 2.0 : r <= 5.0 ? 5.0 : 10.0) * mag;
    a.xmax = a.xstep * ceil(a.xmax * 1.05 / a.xstep);
    if (a.xmax <= 0.0)
        a.xmax = a.xstep;
    return a;
}

static void svg_axes(FILE *f, const struct axes *a)
{
    fprintf(f, "<rect x='%d' y='%d' width='%d' height='%d' fill='none' stroke='#000'/>\n", X0, Y0,
            X1 - X0, Y1 - Y0);
    for (double b = 0.0; b <= a->xmax + 1e-9 * a->xstep; b += a->xstep) {
        fprintf(f, "<line x1='%.1f' y1='%d' x2='%.1f' y2='%d' stroke='#ddd'/>\n"
                   "<text x='%.1f' y='%d' font-size='11' text-anchor='middle'>%g</text>\n",
                sx(a, b), Y0, sx(a, b), Y1, sx(a, b), YZ + 20, b);
    }
    for (int e = (int)a->lo; e <= (int)a->hi; e++) {
        const double y = sy(a, pow(10.0, e));
        fprintf(f, "<line x1='%d' y1='%.1f' x2='%d' y2='%.1f' stroke='#ccc'/>\n"
                   "<text x='%d' y='%.1f' font-size='11' text-anchor='end'>1e%d</text>\n",
                X0, y, X1, y, X0 - 6, y + 4, e);
        /* 2x and 5x lines (labelled when there are few decades) */
        for (int m = 2; e < (int)a->hi && m <= 5; m += 3) {
            const double ym = sy(a, m * pow(10.0, e));
            fprintf(f, "<line x1='%d' y1='%.1f' x2='%d' y2='%.1f' stroke='#eee'/>\n", X0, ym,
                    X1, ym);
            if (a->hi - a->lo <= 2)
                fprintf(f, "<text x='%d' y='%.1f' font-size='10' text-anchor='end' "
                           "fill='#666'>%de%d</text>\n", X0 - 6, ym + 4, m, e);
        }
    }
    fprintf(f, "<line x1='%d' y1='%d' x2='%d' y2='%d' stroke='#ddd' stroke-dasharray='4 3'/>\n"
               "<text x='%d' y='%d' font-size='11' text-anchor='end'>0</text>\n",
            X0, YZ, X1, YZ, X0 - 6, YZ + 4);
    fprintf(f, "<text x='%d' y='%d' font-size='13' text-anchor='middle'>KV cache bytes per "
               "token</text>\n", (X0 + X1) / 2, YZ + 42);
    fprintf(f, "<text x='20' y='%d' font-size='13' text-anchor='middle' transform='rotate(-90 20 "
               "%d)'>mean KL divergence vs f32 cache (log scale)</text>\n", (Y0 + Y1) / 2,
            (Y0 + Y1) / 2);
}

/* Text with the XML specials escaped. */
static void xml_str(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '\'': fputs("&apos;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

static int by_bytes(const void *x, const void *y)
{
    const struct kvx_eval_sweep_row *a = *(const struct kvx_eval_sweep_row *const *)x;
    const struct kvx_eval_sweep_row *b = *(const struct kvx_eval_sweep_row *const *)y;
    return (a->bytes_per_token > b->bytes_per_token) - (a->bytes_per_token < b->bytes_per_token);
}

/* The frontier as a staircase: from each point right to the next one's bytes, then down. */
static void svg_front(FILE *f, const struct axes *a, const struct kvx_eval_sweep_row *rows,
                      int32_t n, const bool *front)
{
    const struct kvx_eval_sweep_row **p = malloc((size_t)(n > 0 ? n : 1) * sizeof *p);
    if (!p)
        return;
    int32_t m = 0;
    for (int32_t i = 0; i < n; i++)
        if (front[i])
            p[m++] = &rows[i];
    qsort(p, (size_t)m, sizeof *p, by_bytes);
    fprintf(f, "<polyline fill='none' stroke='#d62728' stroke-width='2' points='");
    for (int32_t i = 0; i < m; i++) {
        if (i > 0)
            fprintf(f, "%.1f,%.1f ", sx(a, p[i]->bytes_per_token), sy(a, p[i - 1]->kld_mean));
        fprintf(f, "%.1f,%.1f ", sx(a, p[i]->bytes_per_token), sy(a, p[i]->kld_mean));
    }
    fprintf(f, "'/>\n");
    free(p);
}

static void write_svg(FILE *f, const struct kvx_eval_sweep_row *rows, int32_t n, const bool *front,
                      const char *title)
{
    const struct axes a = axes_of(rows, n);
    fprintf(f, "<svg xmlns='http://www.w3.org/2000/svg' width='%d' height='%d' "
               "font-family='sans-serif'>\n<rect width='100%%' height='100%%' fill='#fff'/>\n"
               "<text x='%d' y='26' font-size='15' text-anchor='middle'>", W, H + 20, W / 2);
    xml_str(f, title);
    fprintf(f, "</text>\n");
    svg_axes(f, &a);
    svg_front(f, &a, rows, n, front);
    for (int32_t i = 0; i < n; i++) {
        const double x = sx(&a, rows[i].bytes_per_token), y = sy(&a, rows[i].kld_mean);
        fprintf(f, "<circle cx='%.1f' cy='%.1f' r='4' fill='%s'/>\n<text x='%.1f' y='%.1f' "
                   "font-size='11'%s>", x, y, front[i] ? "#d62728" : "#1f77b4",
                x + (x > X1 - 80 ? -7 : 7), y + (i % 2 ? 12 : -5),
                x > X1 - 80 ? " text-anchor='end'" : "");
        xml_str(f, rows[i].name);
        fprintf(f, "</text>\n");
    }
    fprintf(f, "<text x='%d' y='%d' font-size='11' fill='#d62728'>red: Pareto frontier "
               "(no configuration is smaller and closer to f32)</text>\n</svg>\n", X0, H + 10);
}

typedef void (*writer_fn)(FILE *f, const struct kvx_eval_sweep_row *rows, int32_t n,
                          const bool *front, const char *title);

static void csv_writer(FILE *f, const struct kvx_eval_sweep_row *rows, int32_t n, const bool *front,
                       const char *title)
{
    (void)title;
    write_csv(f, rows, n, front);
}

static enum kvx_status write_one(const char *prefix, const char *ext, writer_fn fn,
                                 const struct kvx_eval_sweep_row *rows, int32_t n,
                                 const bool *front, const char *title, struct kvx_err *err)
{
    const size_t len = strlen(prefix) + strlen(ext) + 1;
    char *path = malloc(len);
    if (!path)
        return kvx_err_set(err, KVX_ERR_NOMEM, "sweep: out of memory");
    snprintf(path, len, "%s%s", prefix, ext);
    enum kvx_status st = KVX_OK;
    FILE *f = fopen(path, "w");
    if (!f) {
        st = kvx_err_set(err, KVX_ERR_IO, "cannot write '%s': %s", path, strerror(errno));
    } else {
        fn(f, rows, n, front, title);
        int bad = ferror(f);
        bad |= fclose(f) != 0;
        if (bad)
            st = kvx_err_set(err, KVX_ERR_IO, "error writing '%s'", path);
    }
    free(path);
    return st;
}

enum kvx_status kvx_eval_sweep_write(const struct kvx_eval_sweep_row *rows, int32_t n,
                                     const char *prefix, const char *title, struct kvx_err *err)
{
    bool *front = malloc((size_t)(n > 0 ? n : 1) * sizeof *front);
    if (!front)
        return kvx_err_set(err, KVX_ERR_NOMEM, "sweep: out of memory");
    kvx_eval_pareto(rows, n, front);
    enum kvx_status st = write_one(prefix, ".csv", csv_writer, rows, n, front, title, err);
    if (st == KVX_OK)
        st = write_one(prefix, ".md", write_md, rows, n, front, title, err);
    if (st == KVX_OK)
        st = write_one(prefix, ".svg", write_svg, rows, n, front, title, err);
    free(front);
    return st;
}
