"""Training RSICRC (METHOD §4), one job per module.

- :mod:`~rscc.training.loop`         ``train(config, out_dir)``: setup, the loop, the run summary
- :mod:`~rscc.training.schedule`     the learning-rate schedule (warm-up, constant or cosine)
- :mod:`~rscc.training.sampling`     the batches of an epoch and the RNG states
- :mod:`~rscc.training.checkpoint`   atomic checkpoint writes, training state reads
- :mod:`~rscc.training.runlog`       ``log.csv``, TensorBoard events, running averages
- :mod:`~rscc.training.validation`   validation loss, CIDEr-D and R@10 for model selection
- :mod:`~rscc.training.preflight`    checks before training: config, run directory, disk, dataset
- :mod:`~rscc.training.data`         data root, caption similarity, model inputs of a batch
- :mod:`~rscc.training.setup`        everything before the first step (model, data, loaders)
- :mod:`~rscc.training.distributed`  process groups, ranks, barriers

The joint loss of a batch (caption, contrastive and total terms) is :class:`rscc.losses.JointLoss`.

The command (``rscc train``, also under ``torchrun``) is :mod:`rscc.commands.train`.
"""
