"""Lite CPU backends: SSD-MobileNet-v2 COCO detector, sentence-embedding instruction matcher, GrabCut segmenter, OpenCV tracker."""
