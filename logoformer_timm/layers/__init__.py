from .attention import (
    GlobalAttention3d, WindowAttention3d, WindowSummary, attend, chunks_on, clamp_window, eager_inference, einsum,
    has_forward_hooks, hooks_see_chunks, inference_chunk_frames, map_frame_chunks, merge_window_heads, padded_key_mask,
    rearrange, repeat, sizes_are_symbolic, to_3tuple, window_merge, window_partition, window_qkv)
from .blocks import BLOCK_TYPES, LogoBlock, SpaceTimeAttention
from .input_checks import (
    INPUT_LAYOUTS, MAX_IMG_SIZE, MAX_NUM_FRAMES, PIXEL_RANGE_WARN_ABOVE, check_choice, check_clip, check_finite_pixels,
    check_heads, check_img_size, check_int)
from .pos_embed import resample_spatial_pos_embed, resample_temporal_pos_embed
from .stem import STEM_CHANS, STEM_STRIDE, FrameStem

__all__ = [
    'GlobalAttention3d', 'WindowAttention3d', 'WindowSummary', 'attend', 'chunks_on', 'clamp_window',
    'eager_inference', 'einsum', 'has_forward_hooks', 'hooks_see_chunks', 'inference_chunk_frames',
    'map_frame_chunks', 'merge_window_heads', 'padded_key_mask', 'rearrange', 'repeat', 'sizes_are_symbolic',
    'to_3tuple', 'window_merge', 'window_partition', 'window_qkv',
    'BLOCK_TYPES', 'LogoBlock', 'SpaceTimeAttention',
    'INPUT_LAYOUTS', 'MAX_IMG_SIZE', 'MAX_NUM_FRAMES', 'PIXEL_RANGE_WARN_ABOVE', 'check_choice', 'check_clip',
    'check_finite_pixels', 'check_heads', 'check_img_size', 'check_int',
    'resample_spatial_pos_embed', 'resample_temporal_pos_embed',
    'STEM_CHANS', 'STEM_STRIDE', 'FrameStem']
