"""The device names prediction accepts, in a module without torch: the CLI's help shows them
before anything heavy is imported (:mod:`radpath.engine.devices` resolves them)."""

DEVICE_HELP = "auto (a GPU when one is visible, else the CPU), cpu, cuda or cuda:N"
