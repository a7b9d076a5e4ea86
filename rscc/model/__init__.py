"""The RSICRC model: backbones, change encoder (HSA, fusion, pooling), caption decoder."""
from rscc.model.rsicrc import RSICRC, RSICRCOutput, build_model, load_weights, parameter_table, save_weights

__all__ = ["RSICRC", "RSICRCOutput", "build_model", "load_weights", "parameter_table", "save_weights"]
