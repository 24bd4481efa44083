"""cifar."""
