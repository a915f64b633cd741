"""Model zoo: TFLite models of NAS search spaces, written without TensorFlow."""
