/* tinycvae: a tiny conditional-VAE decoder that draws a die, as a library (Arduino,
 * PlatformIO). Written by `python src/export.py` with the model it was exported with.
 *
 *   #include <tinycvae.h>
 *   cvae_generate_rows(label, z, row_fn, ctx);   // CVAE_OUT_H calls of row_fn
 *
 * cvae.h has the API and types; cvae_roll.h draws a label and z as deploy/main.c does.
 * The library builds the runtime as deploy/'s MCU images (asserts off, streaming API
 * only: cvae_generate is left out); define TINYCVAE_FULL_API in the build flags for
 * both APIs and the asserts (more RAM: the whole-image arena). */
#ifndef TINYCVAE_H
#define TINYCVAE_H

#if !defined(TINYCVAE_FULL_API) && !defined(CVAE_STREAM_ONLY)
#define CVAE_STREAM_ONLY
#endif

#ifdef __cplusplus
extern "C" {
#endif
#include "cvae.h"
#include "cvae_roll.h"
#ifdef __cplusplus
}
#endif

#endif /* TINYCVAE_H */
