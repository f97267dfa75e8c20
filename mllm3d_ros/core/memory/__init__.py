"""The object memory: 2D proposals lifted onto the map, supports, class-agnostic objects."""
