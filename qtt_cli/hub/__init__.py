"""Model hubs (which pretrained timm models may be finetuned) and how their weights are obtained."""
