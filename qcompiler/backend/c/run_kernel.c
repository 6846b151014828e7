/* run_kernel: run one TVM-generated kernel on arguments read from a file (qcompiler tuning).
 *
 *   run_kernel ARGS OUT
 *
 * ARGS holds, per argument: int32 {type code, bits, ndim, is_output}, int64 shape[ndim], then
 * the raw data unless is_output. The kernel (symbol qc_kernel_under_test) is called once and
 * the first output argument's bytes are written to OUT. Built per candidate schedule, run under
 * qemu with the packet counter: the measured function is the kernel and nothing else.
 */
#define _POSIX_C_SOURCE 200112L  /* posix_memalign */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tvm_abi.inc"

static void *qc_alloc(int device_type, int device_id, uint64_t nbytes, int code, int bits) {
  (void)device_type; (void)device_id; (void)code; (void)bits;
  void *p = NULL;
  return posix_memalign(&p, 128, nbytes ? nbytes : 1) == 0 ? p : NULL;
}
static int qc_free(int device_type, int device_id, void *ptr) {
  (void)device_type; (void)device_id;
  free(ptr);
  return 0;
}
void *(*__TVMBackendAllocWorkspace)(int, int, uint64_t, int, int) = qc_alloc;
int (*__TVMBackendFreeWorkspace)(int, int, void *) = qc_free;
static char qc_error[256];
void TVMFFIErrorSetRaisedFromCStrParts(const char *kind, const char **parts, int32_t n) {
  qc_format_error(qc_error, sizeof qc_error, kind, parts, n);
}
/* Parallel loops run as one task on this thread: the measured cost is the kernel's alone. */
static int qc_parallel_launch(qc_parallel_lambda f, void *cdata, int num_task) {
  qc_ParallelGroupEnv env = {0, 1};
  (void)num_task;
  return f(0, &env, cdata);
}
int (*__TVMBackendParallelLaunch)(qc_parallel_lambda, void *, int) = qc_parallel_launch;

extern int32_t __tvm_ffi_qc_kernel_under_test(void *, const qc_Any *, int32_t, qc_Any *);

#define MAX_ARGS 16
int main(int argc, char **argv) {
  if (argc != 3) { fprintf(stderr, "usage: run_kernel ARGS OUT\n"); return 2; }
  FILE *f = fopen(argv[1], "rb");
  if (!f) { fprintf(stderr, "run_kernel: cannot open %s\n", argv[1]); return 2; }
  qc_DLTensor t[MAX_ARGS];
  int64_t shapes[MAX_ARGS][8];
  size_t sizes[MAX_ARGS];
  int32_t n = 0, out = -1, head[4];
  while (n < MAX_ARGS && fread(head, sizeof head, 1, f) == 1) {
    if (head[2] > 8 || fread(shapes[n], sizeof(int64_t), (size_t)head[2], f) != (size_t)head[2]) {
      fprintf(stderr, "run_kernel: bad argument header %d\n", n); return 2;
    }
    size_t count = 1;
    for (int32_t d = 0; d < head[2]; ++d) count *= (size_t)shapes[n][d];
    sizes[n] = count * (size_t)head[1] / 8;
    void *data = qc_alloc(1, 0, sizes[n], 0, 0);
    if (!data) { fprintf(stderr, "run_kernel: out of memory\n"); return 2; }
    if (head[3]) { memset(data, 0, sizes[n]); if (out < 0) out = n; }
    else if (fread(data, 1, sizes[n], f) != sizes[n]) {
      fprintf(stderr, "run_kernel: argument %d is short\n", n); return 2;
    }
    qc_DLTensor x = {data, {1, 0}, head[2], {(uint8_t)head[0], (uint8_t)head[1], 1},
                     shapes[n], NULL, 0};
    t[n++] = x;
  }
  fclose(f);
  if (qc_call(__tvm_ffi_qc_kernel_under_test, t, n) != 0) {
    fprintf(stderr, "run_kernel: kernel failed: %s\n", qc_error); return 1;
  }
  FILE *o = fopen(argv[2], "wb");
  if (!o || out < 0 || fwrite(t[out].data, 1, sizes[out], o) != sizes[out]) {
    fprintf(stderr, "run_kernel: cannot write %s\n", argv[2]); return 2;
  }
  fclose(o);
  return 0;
}
