/* run_model: read an input file, run the compiled model, print the top class.
 *
 *   run_model INPUT [OUTPUT] [--int]
 *
 * INPUT holds MODEL_INPUT_0_SIZE raw values: float32, or with --int the quantized input type.
 * OUTPUT (optional) receives the raw outputs one after the other (float32, or quantized with
 * --int). The top class is that of output 0.
 * Build:  cc -O2 -I OUT examples/run_model.c OUT/libmodel.a -lm -o run_model
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model.h"

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

int main(int argc, char **argv) {
  const char *in = NULL, *out = NULL;
  int raw = 0;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--int")) raw = 1;
    else if (!in) in = argv[i];
    else out = argv[i];
  }
  if (!in) { fprintf(stderr, "usage: run_model INPUT [OUTPUT] [--int]\n"); return 2; }
  void *ws = aligned_alloc(128, (MODEL_WORKSPACE_BYTES + 127) / 128 * 128 + 128);
  size_t n_in = MODEL_INPUT_0_SIZE, n_out = MODEL_OUTPUT_0_SIZE;
  size_t in_bytes = raw ? n_in * sizeof(MODEL_INPUT_0_TYPE) : n_in * sizeof(float);
  const size_t int_bytes[] = MODEL_OUTPUT_BYTES, float_bytes[] = MODEL_OUTPUT_FLOAT_BYTES;
  const size_t *out_bytes = raw ? int_bytes : float_bytes;
  void *outs[MODEL_NUM_OUTPUTS];
  void *x = malloc(in_bytes);
  if (!ws || !x || read_all(in, x, in_bytes)) return 1;
  for (int i = 0; i < MODEL_NUM_OUTPUTS; ++i)
    if (!(outs[i] = malloc(out_bytes[i]))) return 1;
  const void *ins[1] = {x};
  int rc = raw ? model_run_v(ins, outs, ws) : model_run_float_v(ins, outs, ws);
  if (rc) {
    fprintf(stderr, "run_model: kernel %d failed: %s\n", rc, model_last_error());
    return 1;
  }
  void *y = outs[0];
  size_t best = 0;
  for (size_t i = 1; i < n_out; ++i) {
    double a = raw ? (double)((MODEL_OUTPUT_0_TYPE *)y)[i] : ((float *)y)[i];
    double b = raw ? (double)((MODEL_OUTPUT_0_TYPE *)y)[best] : ((float *)y)[best];
    if (a > b) best = i;
  }
  printf("top class: %zu\n", best);
  if (out) {
    FILE *f = fopen(out, "wb");
    if (!f) return 1;
    for (int i = 0; i < MODEL_NUM_OUTPUTS; ++i)
      if (fwrite(outs[i], 1, out_bytes[i], f) != out_bytes[i]) return 1;
    fclose(f);
  }
  free(x); free(ws);
  for (int i = 0; i < MODEL_NUM_OUTPUTS; ++i) free(outs[i]);
  return 0;
}
