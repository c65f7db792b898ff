terraform import ferrofab_volume.scratch scratch-1
