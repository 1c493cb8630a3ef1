/* CPU time of libjpeg(-turbo) decoding one JPEG file N times, by output and scale: what the
 * choice of MJPEG decoding in docs/performance.md rests on. Not part of the build.
 *
 *   cc -O2 tools/jpeg_decode_cost.c -o /tmp/jpeg_decode_cost -ljpeg   (libjpeg62-turbo-dev)
 *   /tmp/jpeg_decode_cost FRAME.jpg MODE DENOM N
 *
 * MODE 0: RGB, 1: luma, 2: luma of the right half only (jpeg_crop_scanline); DENOM 1, 2, 4 or
 * 8: the DCT-domain scale 1/DENOM. */
#include <stdio.h>
#include <stdlib.h>
#include <jpeglib.h>
#include <sys/resource.h>

static double cpu_s(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return r.ru_utime.tv_sec + r.ru_utime.tv_usec * 1e-6 + r.ru_stime.tv_sec + r.ru_stime.tv_usec * 1e-6;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s FRAME.jpg MODE DENOM N\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f) {
        perror(argv[1]);
        return 1;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *jpeg = malloc(n);
    if (fread(jpeg, 1, n, f) != (size_t)n) {
        fprintf(stderr, "%s: short read\n", argv[1]);
        return 1;
    }
    fclose(f);
    int mode = atoi(argv[2]), denom = atoi(argv[3]), iterations = atoi(argv[4]);
    unsigned char *line = malloc(3 * 8192);
    double start = cpu_s();
    for (int i = 0; i < iterations; i++) {
        struct jpeg_decompress_struct c;
        struct jpeg_error_mgr e;
        c.err = jpeg_std_error(&e);
        jpeg_create_decompress(&c);
        jpeg_mem_src(&c, jpeg, n);
        jpeg_read_header(&c, TRUE);
        c.out_color_space = mode == 0 ? JCS_RGB : JCS_GRAYSCALE;
        c.scale_num = 1;
        c.scale_denom = denom;
        jpeg_start_decompress(&c);
        if (mode == 2) {
            JDIMENSION x = c.output_width / 2, w = c.output_width - x;
            jpeg_crop_scanline(&c, &x, &w);
        }
        while (c.output_scanline < c.output_height) {
            JSAMPROW row = line;
            jpeg_read_scanlines(&c, &row, 1);
        }
        jpeg_finish_decompress(&c);
        jpeg_destroy_decompress(&c);
    }
    printf("%ld bytes, mode %d, 1/%d: %.3f ms CPU per decode\n", n, mode, denom,
           (cpu_s() - start) / iterations * 1e3);
    return 0;
}
