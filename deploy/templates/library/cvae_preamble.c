/* deploy/cvae.c, copied by `python src/export.py`, below these lines that build it as
 * deploy/'s MCU images are (-DNDEBUG -DCVAE_STREAM_ONLY): Arduino libraries take no
 * compiler flags. Define TINYCVAE_FULL_API for cvae_generate and the asserts. */
#ifndef TINYCVAE_FULL_API
#ifndef NDEBUG
#define NDEBUG
#endif
#ifndef CVAE_STREAM_ONLY
#define CVAE_STREAM_ONLY
#endif
#endif
/* ---- deploy/cvae.c ---- */
