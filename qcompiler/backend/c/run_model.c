/* run_model: read an input file, run a compiled model, print the top class.
 *
 *   run_model INPUT [OUTPUT] [--int] [--threads N]
 *
 * INPUT holds the raw values of input 0: float32, or with --int its quantized dtype. OUTPUT
 * (optional) receives the raw outputs one after the other (float32, or quantized with --int).
 * The top class is that of output 0. --threads N runs the kernels' loops on N threads.
 * Build (MODEL: the library's name, `qcompile --name`, default the model file's stem):
 *   cc -O2 -DMODEL=fashion_cnn -I OUT examples/run_model.c OUT/libfashion_cnn.a -lm -lpthread
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef MODEL
#define MODEL model
#endif
#define QC_STR_(x) #x
#define QC_STR(x) QC_STR_(x)
#define QC_CAT_(a, b) a##b
#define QC_CAT(a, b) QC_CAT_(a, b)
#define M(x) QC_CAT(MODEL, x) /* M(_run_v): fashion_cnn_run_v */
#include QC_STR(MODEL.h)

static int read_all(const char *path, void *dst, size_t n) {
  FILE *f = fopen(path, "rb");
  if (!f) { fprintf(stderr, "run_model: cannot open %s\n", path); return -1; }
  size_t got = fread(dst, 1, n, f);
  fclose(f);
  if (got != n) {
    fprintf(stderr, "run_model: %s has %zu bytes, expected %zu\n", path, got, n);
    return -1;
  }
  return 0;
}

/* Element i of a quantized tensor of this dtype, as a double. */
static double element(const void *data, const char *dtype, size_t i) {
  if (!strcmp(dtype, "uint8")) return ((const unsigned char *)data)[i];
  if (!strcmp(dtype, "int8")) return ((const signed char *)data)[i];
  if (!strcmp(dtype, "int16")) return ((const short *)data)[i];
  if (!strcmp(dtype, "int32")) return ((const int *)data)[i];
  return ((const float *)data)[i];
}

int main(int argc, char **argv) {
  const char *in = NULL, *out = NULL;
  int raw = 0;
  M(_threads) threads = {1, NULL, NULL};
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--int")) raw = 1;
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads.num_threads = atoi(argv[++i]);
    else if (!in) in = argv[i];
    else out = argv[i];
  }
  if (!in) {
    fprintf(stderr, "usage: run_model INPUT [OUTPUT] [--int] [--threads N]\n");
    return 2;
  }
  enum { N_OUT = sizeof M(_outputs) / sizeof M(_outputs)[0] };
  const M(_tensor) *x_info = &M(_inputs)[0], *y_info = &M(_outputs)[0];
  size_t ws_bytes = M(_workspace_size)(threads.num_threads);
  void *ws = aligned_alloc(128, (ws_bytes + 127) / 128 * 128);
  void *x = malloc(raw ? x_info->bytes : 4 * x_info->size), *outs[N_OUT];
  if (!ws || !x || read_all(in, x, raw ? x_info->bytes : 4 * x_info->size)) return 1;
  for (int i = 0; i < N_OUT; ++i)
    if (!(outs[i] = malloc(raw ? M(_outputs)[i].bytes : 4 * M(_outputs)[i].size))) return 1;
  const void *ins[1] = {x};
  int rc = raw ? M(_run_v)(ins, outs, ws, ws_bytes, &threads)
               : M(_run_float_v)(ins, outs, ws, ws_bytes, &threads);
  if (rc) {
    fprintf(stderr, "run_model: error %d: %s\n", rc, M(_last_error)(ws));
    return 1;
  }
  const char *dtype = raw ? y_info->dtype : "float32";
  size_t best = 0;
  for (size_t i = 1; i < y_info->size; ++i)
    if (element(outs[0], dtype, i) > element(outs[0], dtype, best)) best = i;
  printf("top class: %zu\n", best);
  if (out) {
    FILE *f = fopen(out, "wb");
    if (!f) return 1;
    for (int i = 0; i < N_OUT; ++i) {
      size_t n = raw ? M(_outputs)[i].bytes : 4 * M(_outputs)[i].size;
      if (fwrite(outs[i], 1, n, f) != n) return 1;
    }
    fclose(f);
  }
  free(x); free(ws);
  for (int i = 0; i < N_OUT; ++i) free(outs[i]);
  return 0;
}
