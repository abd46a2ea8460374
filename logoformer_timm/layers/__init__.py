from .attention import GlobalAttention3d, WindowAttention3d, attend, pad_grid, to_3tuple
from .pos_embed import resample_spatial_pos_embed, resample_temporal_pos_embed
