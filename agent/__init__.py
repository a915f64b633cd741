"""halofarm board agent: benchmarks and adapts TFLite models on a board, reports over MQTT."""
