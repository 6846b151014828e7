/* The machine's int8 peak on one core, measured: a loop of independent AVX-512 VNNI
   `vpdpbusd` (16 lanes x 4 u8*s8 products = 64 multiply-adds = 128 ops each) with enough
   accumulators to hide the latency. Prints ops per second (one core).
   Built and run by tools/bench.py: cc -O2 -mavx512f -mavx512vnni vnni_peak.c */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

#define ACC 12
#define STEP(r) r = _mm512_dpbusd_epi32(r, a, b)

int main(void) {
  __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-5);
  /* ACC registers, each its own start: equal ones are one value to the compiler, which then
     keeps a single dependent chain (GCC 12 did: 3x the real peak on a Zen 4) */
  __m512i r0 = _mm512_set1_epi32(0), r1 = _mm512_set1_epi32(1), r2 = _mm512_set1_epi32(2),
          r3 = _mm512_set1_epi32(3), r4 = _mm512_set1_epi32(4), r5 = _mm512_set1_epi32(5),
          r6 = _mm512_set1_epi32(6), r7 = _mm512_set1_epi32(7), r8 = _mm512_set1_epi32(8),
          r9 = _mm512_set1_epi32(9), r10 = _mm512_set1_epi32(10), r11 = _mm512_set1_epi32(11);
  const long iters = 50000000;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (long n = 0; n < iters; ++n) {
    STEP(r0); STEP(r1); STEP(r2); STEP(r3); STEP(r4); STEP(r5);
    STEP(r6); STEP(r7); STEP(r8); STEP(r9); STEP(r10); STEP(r11);
    __asm__ volatile("" : "+v"(a));  /* keep the loop from being folded */
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  __m512i all[ACC] = {r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, r11};
  int sink = 0;
  for (int i = 0; i < ACC; ++i) sink += _mm512_reduce_add_epi32(all[i]);
  double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
  printf("%.6e %d\n", (double)iters * ACC * 128 / s, sink & 1);
  return 0;
}
