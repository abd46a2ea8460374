from .attention import (
    GlobalAttention3d, WindowAttention3d, WindowSummary, attend, clamp_window, eager_inference,
    inference_chunk_frames, map_frame_chunks, merge_window_heads, padded_key_mask, sizes_are_symbolic, to_3tuple,
    window_merge, window_partition, window_qkv)
from .pos_embed import resample_spatial_pos_embed, resample_temporal_pos_embed
