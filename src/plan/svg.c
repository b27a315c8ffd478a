/* plan/svg: KV bytes per sequence against context length, log-log, 1K..1M tokens, one line
 * per model, written by hand as SVG (axes labelled, a legend) and as CSV with the same points.
 * The points come from kvx_plan_kv_seq_bytes (kv/layout). */
#include <math.h>
#include <stdio.h>

#include "plan/plan.h"
#include "util/err.h"

#define N_PTS 21            /* 2^10 .. 2^20 in half-octave steps */
#define W 760
#define H 460
#define X0 90               /* plot area */
#define X1 560
#define Y0 40
#define Y1 400

static const char *const colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e",
                                     "#8c564b", "#e377c2", "#17becf"};

static int64_t pt_ctx(int i) { return (int64_t)llround(pow(2.0, 10.0 + 0.5 * i)); }

static double x_of(int64_t ctx) { return X0 + (X1 - X0) * (log2((double)ctx) - 10.0) / 10.0; }

static double y_of(double b, double lo, double hi)
{
    return Y1 - (Y1 - Y0) * (log10(b) - lo) / (hi - lo);
}

static void axes(FILE *f, double lo, double hi)
{
    fprintf(f, "<rect x='%d' y='%d' width='%d' height='%d' fill='none' stroke='#000'/>\n", X0, Y0,
            X1 - X0, Y1 - Y0);
    static const char *const xl[] = {"1K", "2K", "4K", "8K", "16K", "32K", "64K", "128K", "256K",
                                     "512K", "1M"};
    for (int i = 0; i <= 10; i++) {
        double x = x_of((int64_t)1 << (10 + i));
        fprintf(f, "<line x1='%.1f' y1='%d' x2='%.1f' y2='%d' stroke='#ddd'/>\n"
                   "<text x='%.1f' y='%d' font-size='11' text-anchor='middle'>%s</text>\n",
                x, Y0, x, Y1, x, Y1 + 16, xl[i]);
    }
    static const char *const units[] = {"B", "KB", "MB", "GB", "TB", "PB"};
    for (int e = (int)ceil(lo); e <= (int)floor(hi); e++) {
        double y = y_of(pow(10.0, e), lo, hi);
        fprintf(f, "<line x1='%d' y1='%.1f' x2='%d' y2='%.1f' stroke='#ddd'/>\n"
                   "<text x='%d' y='%.1f' font-size='11' text-anchor='end'>%g %s</text>\n",
                X0, y, X1, y, X0 - 6, y + 4, pow(10.0, e % 3), units[e / 3 < 5 ? e / 3 : 5]);
    }
    fprintf(f, "<text x='%d' y='%d' font-size='13' text-anchor='middle'>context length (tokens, "
               "log scale)</text>\n", (X0 + X1) / 2, Y1 + 40);
    fprintf(f, "<text x='20' y='%d' font-size='13' text-anchor='middle' transform='rotate(-90 20 "
               "%d)'>KV cache bytes per sequence (log scale)</text>\n", (Y0 + Y1) / 2, (Y0 + Y1) / 2);
}

static void range(const struct kvx_plan_kv *const *kvs, int32_t n, double *lo, double *hi)
{
    double mn = INFINITY, mx = 0;
    for (int32_t m = 0; m < n; m++)
        for (int i = 0; i < N_PTS; i++) {
            double b = (double)kvx_plan_kv_seq_bytes(kvs[m], pt_ctx(i));
            mn = b > 0 && b < mn ? b : mn;
            mx = b > mx ? b : mx;
        }
    if (!(mx > 0)) {
        mn = 1, mx = 10;
    }
    *lo = floor(log10(mn));
    *hi = ceil(log10(mx));
    if (*hi <= *lo)
        *hi = *lo + 1;
}

static void lines(FILE *f, FILE *csv, const struct kvx_plan_kv *const *kvs, int32_t n, double lo,
                  double hi)
{
    for (int32_t m = 0; m < n; m++) {
        const char *col = colors[m % (int32_t)(sizeof colors / sizeof colors[0])];
        fprintf(f, "<polyline fill='none' stroke='%s' stroke-width='2' points='", col);
        for (int i = 0; i < N_PTS; i++) {
            int64_t ctx = pt_ctx(i);
            size_t b = kvx_plan_kv_seq_bytes(kvs[m], ctx);
            fprintf(f, "%.1f,%.1f ", x_of(ctx), y_of(b > 0 ? (double)b : pow(10, lo), lo, hi));
            fprintf(csv, "%s,%lld,%zu\n", kvs[m]->name, (long long)ctx, b);
        }
        fprintf(f, "'/>\n<line x1='%d' y1='%d' x2='%d' y2='%d' stroke='%s' stroke-width='3'/>\n"
                   "<text x='%d' y='%d' font-size='12'>%s</text>\n",
                X1 + 15, Y0 + 10 + 18 * m, X1 + 40, Y0 + 10 + 18 * m, col, X1 + 46,
                Y0 + 14 + 18 * m, kvs[m]->name);
    }
}

enum kvx_status kvx_plan_curve_write(const struct kvx_plan_kv *const *kvs, int32_t n,
                                     const char *svg_path, const char *csv_path,
                                     struct kvx_err *err)
{
    FILE *f = fopen(svg_path, "w");
    if (!f)
        return kvx_err_set(err, KVX_ERR_IO, "cannot write %s", svg_path);
    FILE *csv = fopen(csv_path, "w");
    if (!csv) {
        fclose(f);
        return kvx_err_set(err, KVX_ERR_IO, "cannot write %s", csv_path);
    }
    double lo, hi;
    range(kvs, n, &lo, &hi);
    fprintf(f, "<svg xmlns='http://www.w3.org/2000/svg' width='%d' height='%d' "
               "font-family='sans-serif'>\n<rect width='100%%' height='100%%' fill='#fff'/>\n"
               "<text x='%d' y='24' font-size='15' text-anchor='middle'>KV cache per sequence vs "
               "context (kvx plan)</text>\n", W, H, W / 2);
    axes(f, lo, hi);
    fprintf(csv, "model,context_tokens,kv_bytes\n");
    lines(f, csv, kvs, n, lo, hi);
    fprintf(f, "</svg>\n");
    int bad = ferror(f) | ferror(csv);
    bad |= fclose(f) != 0;
    bad |= fclose(csv) != 0;
    return bad ? kvx_err_set(err, KVX_ERR_IO, "error writing %s or %s", svg_path, csv_path) : KVX_OK;
}
