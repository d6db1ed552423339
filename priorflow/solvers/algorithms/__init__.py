"""The algorithms: DMPlug and its variants, the MPGD family, DPS and DDIM, over one solver contract (base.py), with
the pieces they share: stopping rules, tiles for images larger than the prior, depth coupling for volumes."""
