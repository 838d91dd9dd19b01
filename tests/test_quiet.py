"""Third-party converter noise is muted during TFLite export; our own warnings and errors still show."""

import logging
import os
import sys
import warnings

import pytest

from fakelite.deploy.quiet import third_party_quiet


def test_third_party_noise_is_muted_and_ours_kept(capfd):
    with pytest.warns(UserWarning, match="our own warning") as rec, third_party_quiet():
        warnings.warn_explicit("jax deprecation noise", DeprecationWarning, "jax/_src/x.py", 1, module="jax._src.x")
        warnings.warn_explicit("our own warning", UserWarning, "fakelite/deploy/litert.py", 1,
                               module="fakelite.deploy.litert")
        logging.getLogger("absl").warning("absl chatter")
        print("progress tree")
        os.write(2, b"W0000 00:00:1700000000.0 12345 native.cc:1] native log noise\n")
        os.write(2, b"E0000 native.cc:2] error: conversion problem\n")
    out, err = capfd.readouterr()
    assert not [r for r in rec if "jax" in str(r.message)]
    assert "progress tree" not in out
    assert "jax deprecation noise" not in err and "absl chatter" not in err and "native log noise" not in err
    assert "error: conversion problem" in err


def test_everything_captured_is_shown_when_the_block_fails(capfd):
    with pytest.raises(RuntimeError), third_party_quiet():
        os.write(2, b"W0000 a warning that explains the failure\n")
        raise RuntimeError("conversion failed")
    _, err = capfd.readouterr()
    assert "a warning that explains the failure" in err
    sys.stderr.write("still writable\n")
    assert "still writable" in capfd.readouterr().err
