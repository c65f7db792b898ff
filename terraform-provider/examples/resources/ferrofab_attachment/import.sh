terraform import ferrofab_attachment.scratch_ws7 scratch-1-ws-7
