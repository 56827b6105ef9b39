"""The MONAI bundles of pgnm-monai (pgnm_pretrain, pgnm_finetune), shipped as package data of ``pgnm_monai.bundles``."""
