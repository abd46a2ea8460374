from .config import resolve_video_data_config
